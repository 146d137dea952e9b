#include "client/api_client.h"

#include <httplib.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace cairn::client {
namespace {

// The pin lives in the SSL_CTX's ex_data so the verify callback finds it.
int PinIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// Accepts the chain exactly when the leaf certificate's SHA-256 equals the
// pin: a self-signed server certificate is expected, so OpenSSL's own verdict
// (`preverify_ok`) is not what decides.
int VerifyPinned(int /*preverify_ok*/, X509_STORE_CTX* store) {
  if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;  // only the leaf matters
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (ssl == nullptr) return 0;
  auto* pin = static_cast<const std::string*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), PinIndex()));
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (pin == nullptr || cert == nullptr || X509_digest(cert, EVP_sha256(), md, &len) != 1) return 0;
  return len == pin->size() && std::memcmp(md, pin->data(), len) == 0 ? 1 : 0;
}

std::string ReadTokenFile(const std::string& path, Status* error) {
  std::ifstream in(path);
  if (!in) {
    *error = Status::InvalidArgument("cannot read token file " + path);
    return "";
  }
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

Result<Repository> Repository::Resolve(const std::string& repo_flag, const std::string& token_file,
                                       const std::string& fingerprint_flag,
                                       const std::string& ca_file_flag) {
  Repository r;
  std::string url = repo_flag.empty() ? Env("CAIRN_REPO") : repo_flag;
  if (url.empty()) return Status::InvalidArgument("no repository: pass --repo https://HOST:PORT/STORE or set CAIRN_REPO");
  static constexpr std::string_view kScheme = "https://";
  if (url.compare(0, kScheme.size(), kScheme) != 0) {
    return Status::InvalidArgument("repository must start with https://: " + url);
  }
  std::string rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  if (slash == std::string::npos || slash + 1 >= rest.size()) {
    return Status::InvalidArgument("repository must name a datastore: https://HOST:PORT/STORE");
  }
  std::string hostport = rest.substr(0, slash);
  r.store = rest.substr(slash + 1);
  while (!r.store.empty() && r.store.back() == '/') r.store.pop_back();
  std::string port_text;
  if (!hostport.empty() && hostport.front() == '[') {  // [v6]:port
    size_t close = hostport.find(']');
    if (close == std::string::npos) return Status::InvalidArgument("bad IPv6 host in " + url);
    r.host = hostport.substr(1, close - 1);
    if (close + 1 < hostport.size()) {
      if (hostport[close + 1] != ':') return Status::InvalidArgument("bad repository " + url);
      port_text = hostport.substr(close + 2);
    }
  } else if (size_t colon = hostport.rfind(':'); colon != std::string::npos) {
    r.host = hostport.substr(0, colon);
    port_text = hostport.substr(colon + 1);
  } else {
    r.host = hostport;
  }
  if (!port_text.empty()) {
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), r.port);
    if (ec != std::errc() || end != port_text.data() + port_text.size()) {
      return Status::InvalidArgument("bad port in repository " + url);
    }
  }
  if (r.host.empty() || r.port <= 0 || r.port > 65535) return Status::InvalidArgument("bad repository " + url);

  if (!token_file.empty()) {
    Status err;
    r.token = ReadTokenFile(token_file, &err);
    if (!err.ok()) return err;
  } else {
    r.token = Env("CAIRN_TOKEN");
  }
  if (r.token.empty()) return Status::InvalidArgument("no API token: pass --token-file FILE or set CAIRN_TOKEN");

  if (!fingerprint_flag.empty() && !ca_file_flag.empty()) {
    return Status::InvalidArgument("pass --fingerprint or --ca-file, not both");
  }
  std::string fp = fingerprint_flag;
  if (fp.empty() && ca_file_flag.empty()) fp = Env("CAIRN_FINGERPRINT");
  if (fp.empty()) {
    r.ca_file = ca_file_flag.empty() ? Env("CAIRN_CA_FILE") : ca_file_flag;
    if (r.ca_file.empty()) {
      return Status::InvalidArgument(
          "no way to trust the server: pass --fingerprint HEX (cairn-server prints it at start) "
          "or --ca-file PEM (its certificate is signed by that CA), or set CAIRN_FINGERPRINT "
          "or CAIRN_CA_FILE");
    }
    if (::access(r.ca_file.c_str(), R_OK) != 0) {
      return Status::InvalidArgument("cannot read CA file " + r.ca_file);
    }
    return r;
  }
  std::string hex;
  for (char c : fp) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return Status::InvalidArgument("fingerprint must be hex");
    hex += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  if (hex.size() != 64) return Status::InvalidArgument("fingerprint must be 32 bytes of hex (SHA-256)");
  r.fingerprint = hex;
  return r;
}

nlohmann::json HttpResponse::Json() const { return nlohmann::json::parse(body, nullptr, false); }

Status HttpResponse::ToStatus() const {
  if (status >= 200 && status < 300) return Status::OK();
  auto j = Json();
  std::string msg = j.is_object() && j.contains("error") && j["error"].is_string()
                        ? j["error"].get<std::string>()
                        : body.substr(0, 200);
  msg = "server answered " + std::to_string(status) + ": " + msg;
  switch (status) {
    case 400: return Status::InvalidArgument(msg);
    case 401: return Status::Unauthenticated(msg);
    case 403: return Status::PermissionDenied(msg);
    case 404: return Status::NotFound(msg);
    case 409: return Status::Conflict(msg);
    case 429: return Status::TooManyRequests(msg);
    default: return Status::IOError(msg);
  }
}

ApiClient::ApiClient(const Repository& repo) : repo_(repo) {
  http_ = std::make_unique<httplib::SSLClient>(repo.host, repo.port);
  if (repo.fingerprint.empty()) {
    // A CA-signed certificate: httplib checks the chain against the CA file
    // and the host name against the certificate's names.
    http_->set_ca_cert_path(repo.ca_file.c_str());
    http_->enable_server_certificate_verification(true);
  } else {
    for (size_t i = 0; i < 64; i += 2) {
      pin_ += static_cast<char>(std::stoi(repo.fingerprint.substr(i, 2), nullptr, 16));
    }
    // httplib's own verification expects a CA-signed certificate; pinning
    // replaces it (see VerifyPinned).
    http_->enable_server_certificate_verification(false);
    SSL_CTX* ctx = http_->ssl_context();
    SSL_CTX_set_ex_data(ctx, PinIndex(), &pin_);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, VerifyPinned);
  }
  http_->set_connection_timeout(10, 0);
  http_->set_read_timeout(300, 0);
  http_->set_write_timeout(300, 0);
  http_->set_keep_alive(true);
  // Without it a small request body waits for the delayed ACK (Nagle): a
  // compressed chunk POST took ~97 ms and uploads ran at half speed.
  http_->set_tcp_nodelay(true);
  http_->set_default_headers({{"Authorization", "CairnToken " + repo.token}});
}

ApiClient::~ApiClient() = default;

std::string ApiClient::StorePath(const std::string& suffix) const {
  return "/api/v1/datastores/" + Escape(repo_.store) + suffix;
}

Status ApiClient::TransportError(const void* p) const {
  const auto& r = *static_cast<const httplib::Result*>(p);
  std::string why = httplib::to_string(r.error());
  if (r.error() == httplib::Error::SSLServerVerification || r.error() == httplib::Error::SSLConnection) {
    why += repo_.fingerprint.empty()
               ? " (is the server's certificate signed by the CA in " + repo_.ca_file +
                     ", for the host name " + repo_.host + "?)"
               : " (is the fingerprint right? the server's certificate must match --fingerprint)";
  }
  return Status::IOError("cannot talk to https://" + repo_.host + ":" + std::to_string(repo_.port) +
                         ": " + why);
}

Result<HttpResponse> ApiClient::Finish(void* p) {
  auto& r = *static_cast<httplib::Result*>(p);
  if (!r) return TransportError(p);
  return HttpResponse{r->status, std::move(r->body)};
}

Result<HttpResponse> ApiClient::Get(const std::string& path) {
  auto r = http_->Get(path.c_str());
  return Finish(&r);
}

Result<int> ApiClient::GetInto(const std::string& path, std::string* body, size_t max_body) {
  body->clear();
  bool too_large = false;
  auto r = http_->Get(
      path,
      [&](const httplib::Response& res) {
        const std::string length = res.get_header_value("Content-Length");
        uint64_t n = 0;
        auto [end, ec] = std::from_chars(length.data(), length.data() + length.size(), n);
        if (ec == std::errc() && end == length.data() + length.size() && n <= max_body) {
          body->reserve(n);
        }
        return true;
      },
      [&](const char* data, size_t n) {
        if (body->size() + n > max_body) {
          too_large = true;
          return false;
        }
        body->append(data, n);
        return true;
      });
  if (too_large) {
    body->clear();
    return Status::Corruption("the server's answer is larger than " + std::to_string(max_body) +
                              " bytes, more than any valid answer can be");
  }
  if (!r) return TransportError(&r);
  return r->status;
}

// Bodies up to this size are copied into the request (one small memcpy);
// larger ones are streamed from the caller's string.
constexpr size_t kCopyBodyLimit = 64 * 1024;

Result<HttpResponse> ApiClient::Post(const std::string& path, const std::string& body,
                                     const std::string& content_type) {
  if (body.size() <= kCopyBodyLimit) {
    auto r = http_->Post(path.c_str(), body, content_type.c_str());
    return Finish(&r);
  }
  auto r = http_->Post(
      path, body.size(),
      [&body](size_t offset, size_t length, httplib::DataSink& sink) {
        return sink.write(body.data() + offset, std::min(length, body.size() - offset));
      },
      content_type);
  return Finish(&r);
}
Result<HttpResponse> ApiClient::PostJson(const std::string& path, const nlohmann::json& body) {
  return Post(path, body.dump(), "application/json");
}
Result<HttpResponse> ApiClient::Put(const std::string& path, const nlohmann::json& body) {
  auto r = http_->Put(path.c_str(), body.dump(), "application/json");
  return Finish(&r);
}
Result<HttpResponse> ApiClient::Delete(const std::string& path) {
  auto r = http_->Delete(path.c_str());
  return Finish(&r);
}

std::string ApiClient::Escape(const std::string& value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

}  // namespace cairn::client
