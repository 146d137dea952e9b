// Routes: reader sessions — open, the manifest, archives, chunks, close.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>

#include "server/api_common.h"

namespace cairn::server::api {

void RegisterReaderRoutes(Service* service, httplib::Server* http) {
  http->Post(R"(/api/v1/datastores/([^/]+)/reader)",
             Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(std::string text, StringField(body, "snapshot"));
    CAIRN_ASSIGN_OR_RETURN(SnapshotRef ref, SnapshotRef::Parse(text));
    CAIRN_ASSIGN_OR_RETURN(auto r, service->OpenReader(c, ref));
    auto owner = c.store->GetOwner(ref.group);
    json j = SnapshotJson(storage::SnapshotRow::FromManifest(ref, r->manifest()),
                          owner.ok() ? *owner : "");
    j["session"] = r->id();
    SendJson(res, 201, j);
    return Status::OK();
  }));

  // A disk image streamed chunk by chunk, each chunk's digest checked
  // before its bytes go out. A chunk that fails ends the connection (the
  // provider returns false): the client sees a short body, never wrong bytes.
  http->Get(R"(/api/v1/datastores/([^/]+)/download)",
            Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(std::string text, Param(req, "snapshot"));
    CAIRN_ASSIGN_OR_RETURN(SnapshotRef ref, SnapshotRef::Parse(text));
    CAIRN_ASSIGN_OR_RETURN(std::string archive, Param(req, "archive"));
    CAIRN_ASSIGN_OR_RETURN(std::shared_ptr<ImageDownload> image,
                           service->OpenDownload(c, ref, archive));
    res.status = 200;
    res.set_header("Content-Disposition", "attachment; filename=\"" + image->FileName() + "\"");
    res.set_content_provider(
        image->size(), "application/octet-stream",
        [image](size_t offset, size_t length, httplib::DataSink& sink) {
          const uint64_t i = offset / image->chunk_size();
          auto chunk = image->Chunk(i, static_cast<int64_t>(std::time(nullptr)));
          if (!chunk.ok()) {
            spdlog::error("download of {}: {}", image->FileName(), chunk.status().ToString());
            return false;
          }
          const size_t within = offset - i * image->chunk_size();
          const size_t n = std::min(length, chunk->size() - within);
          return sink.write(chunk->data() + within, n);
        });
    return Status::OK();
  }));

  auto session = [service](const httplib::Request& req) -> Result<std::shared_ptr<ReaderSession>> {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    return service->Reader(p, req.matches[1]);
  };

  http->Get(R"(/api/v1/reader/([0-9a-f]{32})/manifest)",
            Wrap([session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto r, session(req));
    res.status = 200;
    res.set_content(r->manifest().ToJson(), "application/json");
    return Status::OK();
  }));

  http->Get(R"(/api/v1/reader/([0-9a-f]{32})/archive)",
            Wrap([session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto r, session(req));
    CAIRN_ASSIGN_OR_RETURN(std::string name, Param(req, "archive"));
    CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kArchive, name));
    CAIRN_ASSIGN_OR_RETURN(std::string bytes, r->ReadArchive(name));
    SendBytes(res, std::move(bytes));
    return Status::OK();
  }));

  http->Get(R"(/api/v1/reader/([0-9a-f]{32})/chunk)",
            Wrap([session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto r, session(req));
    CAIRN_ASSIGN_OR_RETURN(std::string hex, Param(req, "digest"));
    CAIRN_ASSIGN_OR_RETURN(storage::Digest digest, storage::Digest::FromHex(hex));
    CAIRN_ASSIGN_OR_RETURN(std::string blob, r->ReadChunk(digest));
    SendBytes(res, std::move(blob));
    return Status::OK();
  }));

  http->Delete(R"(/api/v1/reader/([0-9a-f]{32}))",
               Wrap([service, session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto r, session(req));
    service->CloseReader(r);
    SendJson(res, 200, {{"closed", r->id()}});
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
