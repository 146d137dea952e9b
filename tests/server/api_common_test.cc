// How the API turns a Status into an HTTP answer; here: a full disk is a
// 507 that says so, not a 500 "internal error".

#include "server/api_common.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace cairn::server::api {
namespace {

TEST(ApiCommonTest, FullDiskIs507) {
  EXPECT_EQ(HttpCode(Status::FromErrno("/data/stores/default/.chunks/ab/x.tmp", ENOSPC)), 507);
  EXPECT_EQ(HttpCode(Status::FromErrno("/data/x", EDQUOT)), 507);
  EXPECT_EQ(HttpCode(Status::IOError("insert snapshot: database or disk is full")), 507);
  // Other failures keep their codes.
  EXPECT_EQ(HttpCode(Status::FromErrno("/data/x", EIO)), 500);
  EXPECT_EQ(HttpCode(Status::FromErrno("/data/x", ENOENT)), 404);
  EXPECT_EQ(HttpCode(Status::InvalidArgument("No space left on device")), 400);
}

TEST(ApiCommonTest, FullDiskAnswerNamesItWithoutPaths) {
  httplib::Request req;
  req.method = "POST";
  req.path = "/api/v1/backup/0123/chunk";
  httplib::Response res;
  SendError(req, res, Status::FromErrno("/data/stores/default/.chunks/ab/x.tmp", ENOSPC));
  EXPECT_EQ(res.status, 507);
  auto j = json::parse(res.body);
  EXPECT_EQ(j["code"], "NoSpace");
  EXPECT_NE(j["error"].get<std::string>().find("disk is full"), std::string::npos) << res.body;
  EXPECT_EQ(res.body.find("/data"), std::string::npos) << res.body;

  httplib::Response other;
  SendError(req, other, Status::FromErrno("/data/x", EIO));
  EXPECT_EQ(other.status, 500);
  EXPECT_EQ(json::parse(other.body)["error"], "internal error; see the server log");
}

}  // namespace
}  // namespace cairn::server::api
