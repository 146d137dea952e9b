#pragma once

// The client's connection to a cairn-server: HTTPS with the server's
// certificate pinned by its SHA-256 fingerprint, and the API token.
//
// Repository: https://HOST:PORT/STORE (or $CAIRN_REPO); token from
// --token-file or $CAIRN_TOKEN ("USER!TOKEN:SECRET"); fingerprint from
// --fingerprint or $CAIRN_FINGERPRINT. A certificate whose fingerprint differs
// is refused during the TLS handshake: nothing is sent to an unpinned server.
//
// Thread safety: one ApiClient per thread (each holds one connection).

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "storage/status.h"

namespace httplib {
class SSLClient;
}

namespace cairn::client {

using storage::Result;
using storage::Status;

struct Repository {
  std::string host;
  int port = 8107;
  std::string store;
  std::string token;        // "user!token:secret"
  std::string fingerprint;  // 64 upper-case hex digits; empty when ca_file decides
  std::string ca_file;      // PEM CA certificates; used only without a fingerprint

  // Fills a Repository from flags, falling back to the environment.
  // The server's certificate is trusted in one of two ways: pinned by its
  // SHA-256 fingerprint (--fingerprint / $CAIRN_FINGERPRINT), or checked
  // against a CA file with the host name (--ca-file / $CAIRN_CA_FILE). A flag
  // wins over the environment; both flags at once are refused.
  // InvalidArgument naming what is missing or malformed.
  static Result<Repository> Resolve(const std::string& repo_flag, const std::string& token_file,
                                    const std::string& fingerprint_flag,
                                    const std::string& ca_file_flag = "");
};

struct HttpResponse {
  int status = 0;
  std::string body;
  nlohmann::json Json() const;
  // OK for 2xx; otherwise a Status carrying the server's error message.
  Status ToStatus() const;
};

class ApiClient {
 public:
  explicit ApiClient(const Repository& repo);
  ~ApiClient();

  const Repository& repo() const { return repo_; }
  // "/api/v1/datastores/<store>" + suffix.
  std::string StorePath(const std::string& suffix) const;

  // Transport failures (refused connection, wrong fingerprint, timeout) are
  // IOError with a message that says which.
  Result<HttpResponse> Get(const std::string& path);
  // GET with the response body written into *body (cleared first; its
  // capacity is kept, and reserved from Content-Length up to `max_body`), so
  // a caller fetching many chunks reuses one buffer instead of httplib's
  // growing string and a copy of it. A body over `max_body` bytes (the
  // largest valid answer: the caller knows it) ends the request as
  // Corruption, unread. Returns the HTTP status; the body, error message
  // included, is in *body (HttpResponse{status, *body}.ToStatus() reads it).
  Result<int> GetInto(const std::string& path, std::string* body, size_t max_body);
  // The body is sent from where it lies: not copied into the request (as
  // httplib's string overload does) when it is large.
  Result<HttpResponse> Post(const std::string& path, const std::string& body,
                            const std::string& content_type);
  Result<HttpResponse> PostJson(const std::string& path, const nlohmann::json& body);
  Result<HttpResponse> Put(const std::string& path, const nlohmann::json& body);
  Result<HttpResponse> Delete(const std::string& path);

  // Percent-encodes a query value.
  static std::string Escape(const std::string& value);

 private:
  // Moves the body out of the httplib::Result at `result`.
  Result<HttpResponse> Finish(void* result);
  Status TransportError(const void* result) const;

  Repository repo_;
  std::string pin_;  // fingerprint as 32 raw bytes
  std::unique_ptr<httplib::SSLClient> http_;
};

}  // namespace cairn::client
