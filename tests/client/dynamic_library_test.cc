// Libraries opened at first use (client/dynamic_library.h): a library that
// is not there and a function a library lacks are clear errors naming them;
// a real one (libvirt, as `cairn backup domain` loads it) gives callable
// functions.

#include "client/dynamic_library.h"

#include <libvirt/libvirt.h>

#include <gtest/gtest.h>

#include "client/libvirt_domain.h"

namespace cairn::client {
namespace {

TEST(DynamicLibraryTest, MissingLibraryNamesItsPackage) {
  auto lib = DynamicLibrary::Open("libcairn-no-such-library.so.7", "cairn-no-such-package");
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.status().code(), storage::Status::Code::kIOError);
  EXPECT_NE(lib.status().message().find("libcairn-no-such-library.so.7"), std::string::npos)
      << lib.status().ToString();
  EXPECT_NE(lib.status().message().find("cairn-no-such-package"), std::string::npos)
      << lib.status().ToString();
}

TEST(DynamicLibraryTest, MissingFunctionIsAnError) {
  auto lib = DynamicLibrary::Open("libvirt.so.0", "libvirt0");
  ASSERT_TRUE(lib.ok()) << lib.status().ToString();
  decltype(&::virConnectOpen) fn = nullptr;
  storage::Status s = lib->Bind("virNoSuchFunctionInLibvirt", &fn);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("libvirt.so.0 has no virNoSuchFunctionInLibvirt"), std::string::npos)
      << s.ToString();
  EXPECT_EQ(fn, nullptr);
}

TEST(DynamicLibraryTest, LibvirtTableIsCallable) {
  auto api = LoadLibvirt();
  ASSERT_TRUE(api.ok()) << api.status().ToString();
  EXPECT_EQ(*api, &Virt());
  EXPECT_NE((*api)->virConnectOpen, nullptr);
  EXPECT_NE((*api)->virDomainCheckpointFree, nullptr);
  // A URI no driver serves: libvirt answers (no crash), with an error the
  // client reports.
  virConnectPtr c = (*api)->virConnectOpen("cairn-no-such-driver:///x");
  EXPECT_EQ(c, nullptr);
  EXPECT_NE(VirError("connect").message().find("connect: "), std::string::npos);
}

}  // namespace
}  // namespace cairn::client
