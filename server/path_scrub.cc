#include "server/path_scrub.h"

#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <string_view>
#include <vector>

#include "storage/mutex.h"

namespace cairn::server {

namespace {

// Process-wide (a test process may run several servers).
class KnownPaths {
 public:
  void Add(const std::string& path) {
    if (path.empty() || path == "/" || path == ".") return;
    MutexLock lock(&mu_);
    if (std::find(paths_.begin(), paths_.end(), path) != paths_.end()) return;
    paths_.push_back(path);
    // Longest first, so a datastore inside the data folder is replaced whole.
    std::sort(paths_.begin(), paths_.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  }
  std::vector<std::string> Get() {
    MutexLock lock(&mu_);
    return paths_;
  }

 private:
  Mutex mu_;
  std::vector<std::string> paths_ CAIRN_GUARDED_BY(mu_);
};

KnownPaths& ServerPaths() {
  static KnownPaths* paths = new KnownPaths;
  return *paths;
}

}  // namespace

void AddServerPath(const std::string& path) {
  ServerPaths().Add(path);
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) != nullptr) ServerPaths().Add(resolved);
}

std::string ScrubPaths(std::string text) {
  for (const std::string& p : ServerPaths().Get()) {
    for (size_t pos = text.find(p); pos != std::string::npos; pos = text.find(p, pos)) {
      text.replace(pos, p.size(), "<server>");
      pos += 8;
    }
  }
  constexpr std::string_view kBefore = " \t(\"'=,";
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const bool starts = text[i] == '/' && i + 1 < text.size() && text[i + 1] != ' ' &&
                        (i == 0 || kBefore.find(text[i - 1]) != std::string_view::npos);
    if (!starts) {
      out += text[i++];
      continue;
    }
    // To the end of the token; ": " ends it too (strerror follows), a ':'
    // inside (a snapshot time in a path) does not.
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j])) &&
           text[j] != '"' && text[j] != '\'' && text[j] != ',' && text[j] != ')' &&
           !(text[j] == ':' && (j + 1 == text.size() || text[j + 1] == ' '))) {
      ++j;
    }
    out += "<path>";
    i = j;
  }
  return out;
}

}  // namespace cairn::server
