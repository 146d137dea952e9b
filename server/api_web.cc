// Routes: the web UI's static files (web/), GET and HEAD of every path not
// under /api/. Only regular files inside the web folder with a known type
// are served: no directory listing, no `..`, no hidden files, and no symlink
// that leads out of the folder. The UI routes on `#/…`, so there is no
// fallback to index.html for unknown paths.

#include <sys/stat.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include <spdlog/spdlog.h>

#include "server/api_common.h"
#include "server/server.h"

#ifndef CAIRN_WEB_DIR
#define CAIRN_WEB_DIR ""
#endif

namespace cairn::server {

std::string DefaultWebDir() {
  // An installed server (PREFIX/bin/cairn-server) serves the UI installed
  // next to it (PREFIX/share/cairn/web, the package's /usr/share/cairn/web);
  // a build tree's, the source tree's web/.
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec && exe.parent_path().filename() == "bin") {
    const std::filesystem::path installed = exe.parent_path().parent_path() / "share/cairn/web";
    if (std::filesystem::is_regular_file(installed / "index.html", ec)) return installed.string();
  }
  return CAIRN_WEB_DIR;
}

namespace api {
namespace {

// The Content-Type of a served file by its extension; empty for a type the
// UI does not use (such files are not served).
std::string ContentType(std::string_view name) {
  static constexpr std::pair<std::string_view, std::string_view> kTypes[] = {
      {".html", "text/html; charset=utf-8"},   {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},     {".svg", "image/svg+xml"},
      {".png", "image/png"},                   {".json", "application/json"},
      {".ico", "image/x-icon"},                {".txt", "text/plain; charset=utf-8"},
  };
  for (const auto& [ext, type] : kTypes) {
    if (name.size() > ext.size() && name.substr(name.size() - ext.size()) == ext) {
      return std::string(type);
    }
  }
  return "";
}

// The relative file name a URL path asks for, or InvalidArgument when a
// segment is `..`, `.`, empty, hidden or holds a byte outside [A-Za-z0-9._-]
// (httplib has already percent-decoded the path, so `%2e%2e` arrives as `..`).
Result<std::string> RelativeName(const std::string& path) {
  if (path == "/") return std::string("index.html");
  std::string_view rest(path);
  rest.remove_prefix(1);
  size_t start = 0;
  while (start <= rest.size()) {
    size_t end = rest.find('/', start);
    if (end == std::string_view::npos) end = rest.size();
    std::string_view seg = rest.substr(start, end - start);
    if (seg.empty() || seg == "." || seg == ".." || seg[0] == '.') {
      return Status::InvalidArgument("invalid path in web request");
    }
    for (char c : seg) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
      if (!ok) return Status::InvalidArgument("invalid path in web request");
    }
    start = end + 1;
  }
  return std::string(rest);
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) return "";
  return buf;
}

// The file for `name` if it is a regular file whose real path lies inside
// the real web folder; NotFound otherwise.
Result<std::string> ResolveFile(const std::string& root, const std::string& name,
                                struct stat* st) {
  const std::string real = RealPath(root + "/" + name);
  if (real.empty() || real.compare(0, root.size() + 1, root + "/") != 0 ||
      stat(real.c_str(), st) != 0 || !S_ISREG(st->st_mode)) {
    return Status::NotFound("no such file in the web UI");
  }
  return real;
}

Status ServeFile(const std::string& root, const httplib::Request& req, httplib::Response& res) {
  CAIRN_ASSIGN_OR_RETURN(std::string name, RelativeName(req.path));
  const std::string type = ContentType(name);
  if (type.empty()) return Status::NotFound("no such file in the web UI");
  struct stat st {};
  CAIRN_ASSIGN_OR_RETURN(std::string file, ResolveFile(root, name, &st));
  const std::string etag = "\"" + std::to_string(st.st_mtime) + "-" + std::to_string(st.st_size) +
                           "\"";
  // no-cache: the browser revalidates each time, so a new UI is seen at once.
  res.set_header("Cache-Control", "no-cache");
  res.set_header("ETag", etag);
  if (req.get_header_value("If-None-Match") == etag) {
    res.status = 304;
    return Status::OK();
  }
  std::ifstream in(file, std::ios::binary);
  std::ostringstream body;
  body << in.rdbuf();
  if (!in) return Status::NotFound("no such file in the web UI");
  res.status = 200;
  res.set_content(body.str(), type.c_str());
  return Status::OK();
}

}  // namespace

void RegisterWebRoutes(const std::string& web_dir, httplib::Server* http) {
  if (web_dir.empty()) return;
  // Resolved once; a folder that does not exist serves nothing (404s).
  const std::string root = RealPath(web_dir);
  if (root.empty()) {
    spdlog::warn("web UI folder {} not found: the UI is not served", web_dir);
    return;
  }
  // Every path but /api/…: ECMAScript regex, matched against the whole path.
  // httplib answers HEAD with the GET route, without the body.
  http->Get(R"(/(?!api/).*)", Wrap([root](const httplib::Request& req, httplib::Response& res) {
    return ServeFile(root, req, res);
  }));
}

}  // namespace api
}  // namespace cairn::server
