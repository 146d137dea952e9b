#include "server/sync_remote.h"

#include "client/repository_client.h"

namespace cairn::server {
namespace {

using client::ApiClient;
using client::HttpResponse;
using nlohmann::json;

constexpr char kBinary[] = "application/octet-stream";

// The body of a 2xx answer; the remote's error otherwise.
Result<std::string> Body(Result<HttpResponse> r) {
  if (!r.ok()) return r.status();
  CAIRN_RETURN_IF_ERROR(r->ToStatus());
  return std::move(r->body);
}

// A 2xx answer's JSON object.
Result<json> JsonBody(Result<HttpResponse> r) {
  CAIRN_ASSIGN_OR_RETURN(std::string body, Body(std::move(r)));
  CAIRN_ASSIGN_OR_RETURN(json j, client::ParseAnswerBody(body));
  if (!j.is_object()) return Status::Corruption("server answer: not a JSON object");
  return j;
}

// The 32-hex session id in `j[key]`.
Result<std::string> SessionId(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string() || it->get<std::string>().size() != 32) {
    return Status::Corruption(std::string("server answer: no \"") + key + "\" id");
  }
  const std::string id = it->get<std::string>();
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return Status::Corruption("server answer: malformed session id");
    }
  }
  return id;
}

}  // namespace

// ---------------------------------------------------------------------------
// RemoteReader

Result<std::unique_ptr<RemoteReader>> RemoteReader::Open(ApiClient* api,
                                                         const std::string& snapshot) {
  CAIRN_ASSIGN_OR_RETURN(json info,
                         JsonBody(api->PostJson(api->StorePath("/reader"), {{"snapshot", snapshot}})));
  CAIRN_ASSIGN_OR_RETURN(std::string id, SessionId(info, "session"));
  return std::unique_ptr<RemoteReader>(new RemoteReader(api, std::move(info), std::move(id)));
}

RemoteReader::~RemoteReader() { (void)api_->Delete("/api/v1/reader/" + id_); }

Result<std::string> RemoteReader::Manifest() {
  return Body(api_->Get("/api/v1/reader/" + id_ + "/manifest"));
}

Result<std::string> RemoteReader::Archive(const std::string& name) {
  return Body(api_->Get("/api/v1/reader/" + id_ + "/archive?archive=" + ApiClient::Escape(name)));
}

Result<std::string> RemoteReader::Chunk(ApiClient& api, const Digest& digest) {
  return Body(api.Get("/api/v1/reader/" + id_ + "/chunk?digest=" + digest.ToHex()));
}

// ---------------------------------------------------------------------------
// RemoteBackup

Result<std::unique_ptr<RemoteBackup>> RemoteBackup::Start(ApiClient* api, const std::string& group,
                                                         int64_t time, const json& crypt) {
  json body = {{"group", group}, {"time", time}};
  if (!crypt.is_null()) body["crypt"] = crypt;
  CAIRN_ASSIGN_OR_RETURN(json info, JsonBody(api->PostJson(api->StorePath("/backup"), body)));
  CAIRN_ASSIGN_OR_RETURN(std::string id, SessionId(info, "session"));
  return std::unique_ptr<RemoteBackup>(new RemoteBackup(api, std::move(info), std::move(id)));
}

RemoteBackup::~RemoteBackup() { Abort(); }

void RemoteBackup::Abort() {
  if (done_) return;
  done_ = true;
  (void)api_->Post("/api/v1/backup/" + id_ + "/abort", "", "application/json");
}

Result<std::string> RemoteBackup::PreviousIndex(const std::string& archive) {
  return Body(api_->Get("/api/v1/backup/" + id_ + "/previous-index?archive=" +
                        ApiClient::Escape(archive)));
}

Result<bool> RemoteBackup::UploadChunk(ApiClient& api, const Digest& digest, uint64_t size,
                                       std::string_view blob) {
  CAIRN_ASSIGN_OR_RETURN(
      json j, JsonBody(api.Post("/api/v1/backup/" + id_ + "/chunk?digest=" + digest.ToHex() +
                                    "&size=" + std::to_string(size),
                                std::string(blob), kBinary)));
  auto it = j.find("stored");
  if (it == j.end() || !it->is_boolean()) return Status::Corruption("server answer: no \"stored\"");
  return it->get<bool>();
}

Status RemoteBackup::WriteIndex(const std::string& archive, std::string_view bytes) {
  return Body(api_->Post("/api/v1/backup/" + id_ + "/index?archive=" + ApiClient::Escape(archive),
                         std::string(bytes), kBinary))
      .status();
}

Status RemoteBackup::WriteBlob(const std::string& archive, std::string_view bytes) {
  return Body(api_->Post("/api/v1/backup/" + id_ + "/blob?archive=" + ApiClient::Escape(archive),
                         std::string(bytes), kBinary))
      .status();
}

Result<json> RemoteBackup::Finish(const json& body) {
  CAIRN_ASSIGN_OR_RETURN(json j, JsonBody(api_->PostJson("/api/v1/backup/" + id_ + "/finish", body)));
  done_ = true;
  return j;
}

}  // namespace cairn::server
