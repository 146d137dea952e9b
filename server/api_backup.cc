// Routes: backup sessions — start, the previous index, chunk, index and blob
// uploads, finish, stats, abort.

#include <charconv>

#include "server/api_common.h"
#include "server/server.h"
#include "storage/blob.h"
#include "storage/json_bounds.h"
#include "storage/manifest.h"

namespace cairn::server::api {
namespace {

// Client info stored in a manifest at finish (the object itself is level 1).
constexpr storage::JsonLimits kClientInfoLimits{/*max_depth=*/16, /*max_size=*/64 * 1024};

Result<std::optional<int64_t>> TimeField(const json& body) {
  auto it = body.find("time");
  if (it == body.end() || it->is_null()) return std::optional<int64_t>();
  int64_t time = 0;
  if (it->is_number_integer()) {
    time = it->get<int64_t>();
  } else if (it->is_string()) {
    CAIRN_ASSIGN_OR_RETURN(time, storage::ParseSnapshotTime(it->get<std::string>()));
  } else {
    return Status::InvalidArgument("time must be seconds or YYYY-MM-DDTHH:MM:SSZ");
  }
  if (time < 0 || time > 253402300799) return Status::InvalidArgument("time out of range");
  return std::optional<int64_t>(time);
}

// The optional "crypt" of a start or finish body: {"mode": "encrypt",
// "fingerprint": FP[, "signature": HEX]} (finish needs the signature).
Result<std::optional<storage::CryptInfo>> CryptField(const json& body, bool finish) {
  auto it = body.find("crypt");
  if (it == body.end() || it->is_null()) return std::optional<storage::CryptInfo>();
  if (!it->is_object()) return Status::InvalidArgument("crypt must be an object");
  CAIRN_RETURN_IF_ERROR((finish ? OnlyKeys(*it, {"mode", "fingerprint", "signature"})
                                : OnlyKeys(*it, {"mode", "fingerprint"}))
                            .WithContext("crypt"));
  CAIRN_ASSIGN_OR_RETURN(std::string mode, RequiredString(*it, "mode"));
  if (mode != "encrypt") return Status::InvalidArgument("crypt.mode must be \"encrypt\"");
  storage::CryptInfo info;
  CAIRN_ASSIGN_OR_RETURN(info.fingerprint, RequiredString(*it, "fingerprint"));
  if (!storage::IsKeyFingerprint(info.fingerprint)) {
    return Status::InvalidArgument(
        "crypt.fingerprint must be 8 lowercase hex pairs joined by ':'");
  }
  if (finish) {
    CAIRN_ASSIGN_OR_RETURN(info.signature, RequiredString(*it, "signature"));
    if (!storage::Digest::FromHex(info.signature).ok()) {
      return Status::InvalidArgument("crypt.signature must be 64 lowercase hex digits");
    }
  }
  return std::optional<storage::CryptInfo>(std::move(info));
}

json StartedJson(const StartBackupResult& started) {
  const auto& s = started.session;
  json j = {{"session", s->id()}, {"snapshot", s->ref().ToString()}, {"time", s->ref().time}};
  if (s->previous() && started.previous_manifest) {
    const auto& pm = *started.previous_manifest;
    j["previous"] = {{"snapshot", s->previous()->ToString()},
                     {"time", s->previous()->time},
                     {"archives", ArchivesJson(pm.archives)},
                     {"verify", pm.verify ? json(pm.verify->state) : json(nullptr)},
                     {"client", pm.client},
                     {"crypt", pm.crypt ? json{{"mode", "encrypt"},
                                               {"fingerprint", pm.crypt->fingerprint}}
                                        : json(nullptr)}};
  } else {
    j["previous"] = nullptr;
  }
  return j;
}

json StatsJson(const BackupStats& st) {
  return {{"chunks-uploaded", st.chunks_uploaded}, {"chunks-new", st.chunks_new},
          {"bytes-uploaded", st.bytes_uploaded},   {"chunks-known", st.chunks_known},
          {"chunks-referenced", st.chunks_referenced}, {"archives", st.archives}};
}

// The client info of a finish body, bounded before it is stored: the body's
// own bound (64 levels) is far more than a manifest should carry. Checked
// on its text, which dump() (at most 64 deep) makes safely.
Result<json> ClientInfo(json& body) {
  auto it = body.find("client");
  if (it == body.end() || it->is_null()) return json::object();
  if (!it->is_object()) return Status::InvalidArgument("client must be an object");
  Status bound = storage::CheckJsonBounds(it->dump(-1, ' ', false, json::error_handler_t::replace),
                                          kClientInfoLimits);
  if (!bound.ok()) return Status::InvalidArgument("client info: " + bound.message());
  return std::move(*it);
}

// Reads the request body into *body (cleared first), reserving
// Content-Length up front. The gate (server/http_gate.h) has refused a body
// over the limit before anything was read; as a backstop, a body over
// `limit` is read to its end and discarded, and refused as Corruption. A
// body that cannot be read (connection closed early) is InvalidArgument.
Status ReadBody(const httplib::Request& req, const httplib::ContentReader& reader, uint64_t limit,
                std::string* body) {
  body->clear();
  const std::string length_text = req.get_header_value("Content-Length");
  uint64_t length = 0;
  auto [ptr, ec] =
      std::from_chars(length_text.data(), length_text.data() + length_text.size(), length);
  (void)ptr;
  if (ec == std::errc() && length <= limit) body->reserve(length);
  bool over = false;
  const bool ok = reader([&](const char* data, size_t n) {
    if (over || body->size() + n > limit) {
      over = true;
      return true;  // keep reading: the connection must reach the next request
    }
    body->append(data, n);
    return true;
  });
  if (over) {
    std::string().swap(*body);
    return Status::Corruption("chunk blob exceeds the limit of " + std::to_string(limit) +
                              " bytes");
  }
  if (!ok) return Status::InvalidArgument("could not read the request body");
  return Status::OK();
}

Result<uint64_t> SizeParam(const httplib::Request& req) {
  CAIRN_ASSIGN_OR_RETURN(std::string size_text, Param(req, "size"));
  uint64_t size = 0;
  auto [ptr, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
  if (ec != std::errc() || ptr != size_text.data() + size_text.size() ||
      size > storage::kMaxBlobPayload) {
    return Status::InvalidArgument("size must be a decimal number up to 16 MiB");
  }
  return size;
}

}  // namespace

void RegisterBackupRoutes(Service* service, httplib::Server* http) {
  http->Post(R"(/api/v1/datastores/([^/]+)/backup)",
             Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(std::string group_text, StringField(body, "group"));
    CAIRN_ASSIGN_OR_RETURN(storage::GroupRef group, storage::GroupRef::Parse(group_text));
    CAIRN_ASSIGN_OR_RETURN(std::optional<int64_t> time, TimeField(body));
    CAIRN_ASSIGN_OR_RETURN(std::optional<storage::CryptInfo> crypt, CryptField(body, false));
    std::optional<std::string> fingerprint;
    if (crypt) fingerprint = crypt->fingerprint;
    CAIRN_ASSIGN_OR_RETURN(StartBackupResult started,
                           service->StartBackup(c, group, time, std::move(fingerprint)));
    SendJson(res, 201, StartedJson(started));
    return Status::OK();
  }));

  auto session = [service](const httplib::Request& req) -> Result<std::shared_ptr<BackupSession>> {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    return service->Backup(p, req.matches[1]);
  };

  http->Get(R"(/api/v1/backup/([0-9a-f]{32})/previous-index)",
            Wrap([session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, session(req));
    CAIRN_ASSIGN_OR_RETURN(std::string archive, Param(req, "archive"));
    CAIRN_ASSIGN_OR_RETURN(std::string bytes, s->PreviousIndex(archive));
    SendBytes(res, std::move(bytes));
    return Status::OK();
  }));

  // The chunk body is read here rather than into req.body: httplib grows
  // req.body by doubling in 4 KiB appends, which copies every chunk once more
  // and leaves ~12 MiB of heap per worker thread. The buffer is per thread,
  // sized from Content-Length, and the whole body is always read so the
  // keep-alive connection stays in step.
  http->Post(R"(/api/v1/backup/([0-9a-f]{32})/chunk)",
             [session](const httplib::Request& req, httplib::Response& res,
                       const httplib::ContentReader& reader) {
    thread_local std::string body;
    Status read = ReadBody(req, reader, kMaxChunkBodyBytes, &body);
    Run(req, res, [&]() -> Status {
      CAIRN_RETURN_IF_ERROR(read);
      CAIRN_ASSIGN_OR_RETURN(auto s, session(req));
      CAIRN_ASSIGN_OR_RETURN(std::string digest_hex, Param(req, "digest"));
      CAIRN_ASSIGN_OR_RETURN(storage::Digest digest, storage::Digest::FromHex(digest_hex));
      CAIRN_ASSIGN_OR_RETURN(uint64_t size, SizeParam(req));
      CAIRN_ASSIGN_OR_RETURN(storage::InsertResult r, s->UploadChunk(digest, size, body));
      const bool stored = r == storage::InsertResult::kInserted;
      SendJson(res, stored ? 201 : 200, {{"digest", digest_hex}, {"stored", stored}});
      return Status::OK();
    });
    // Keep a buffer for the usual 4 MiB chunk; give back anything larger.
    if (body.capacity() > storage::kChunkSize + 64 * 1024) std::string().swap(body);
  });

  http->Post(R"(/api/v1/backup/([0-9a-f]{32})/(index|blob))",
             Wrap([session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, session(req));
    CAIRN_ASSIGN_OR_RETURN(std::string archive, Param(req, "archive"));
    CAIRN_RETURN_IF_ERROR(req.matches[2] == "index" ? s->WriteIndex(archive, req.body)
                                                    : s->WriteBlob(archive, req.body));
    SendJson(res, 200, {{"archive", archive}});
    return Status::OK();
  }));

  http->Post(R"(/api/v1/backup/([0-9a-f]{32})/finish)",
             Wrap([service, session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, session(req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(json client, ClientInfo(body));
    CAIRN_ASSIGN_OR_RETURN(std::optional<storage::CryptInfo> crypt, CryptField(body, true));
    CAIRN_ASSIGN_OR_RETURN(FinishedBackup done,
                           service->FinishBackup(s, std::move(client), std::move(crypt)));
    SendJson(res, 200, {{"snapshot", done.ref.ToString()}, {"stats", StatsJson(done.stats)}});
    return Status::OK();
  }));

  http->Get(R"(/api/v1/backup/([0-9a-f]{32})/stats)",
            Wrap([session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, session(req));
    SendJson(res, 200, StatsJson(s->stats()));
    return Status::OK();
  }));

  http->Post(R"(/api/v1/backup/([0-9a-f]{32})/abort)",
             Wrap([service, session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, session(req));
    service->EndBackup(s);
    SendJson(res, 200, {{"aborted", s->id()}});
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
