#include "client/cli.h"

#include <cstdio>
#include <iostream>

namespace cairn::client {

Result<Repository> GlobalOptions::Resolve() const {
  return Repository::Resolve(repo, token_file, fingerprint);
}

int Fail(const Status& s) {
  std::cerr << "cairn: " << s.message() << "\n";
  return s.IsInvalidArgument() ? 2 : 1;
}

std::string HumanSize(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string Rate(double bytes_per_s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB/s", bytes_per_s / 1e6);
  return buf;
}

}  // namespace cairn::client
