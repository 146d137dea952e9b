#pragma once

// The remote half of a sync (server/sync.h), through the remote server's
// public API (server/API.md): a reader session on the source of a pull, a
// backup session on the target of a push. All HTTP of a sync is in here;
// the engine sees typed calls and Statuses.
//
// Errors: the remote's answers as client::HttpResponse::ToStatus maps them
// (InvalidArgument for 400, NotFound, Conflict, PermissionDenied, …, with
// the remote's message), IOError for transport failures, Corruption for an
// answer that is not what the API promises.
//
// Thread safety: the session objects may be used from several threads as
// far as the chunk calls go, each thread passing its own ApiClient (one
// connection each); the other calls go through the ApiClient given at
// Open/Start and belong to one thread.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "client/api_client.h"
#include "storage/digest.h"
#include "storage/status.h"

namespace cairn::server {

using storage::Digest;
using storage::Result;
using storage::Status;

// A reader session on one snapshot of the remote datastore (api->repo().store).
class RemoteReader {
 public:
  // Opens it; `api` must outlive the reader. The remote's answer (the
  // snapshot's JSON with "session") is info().
  static Result<std::unique_ptr<RemoteReader>> Open(client::ApiClient* api,
                                                    const std::string& snapshot);
  // Closes the session (best effort).
  ~RemoteReader();

  const nlohmann::json& info() const { return info_; }
  // index.json as the remote stores it.
  Result<std::string> Manifest();
  // An archive file (an index or a blob) as stored.
  Result<std::string> Archive(const std::string& name);
  // The stored blob of a chunk, unchecked, over `api` (a worker's own connection).
  Result<std::string> Chunk(client::ApiClient& api, const Digest& digest);

 private:
  RemoteReader(client::ApiClient* api, nlohmann::json info, std::string id)
      : api_(api), info_(std::move(info)), id_(std::move(id)) {}
  client::ApiClient* const api_;
  const nlohmann::json info_;
  const std::string id_;
};

// A backup session in the remote datastore.
class RemoteBackup {
 public:
  // Starts a backup of `group` at `time`; `crypt` is null for a plain
  // snapshot, else {"mode","fingerprint"} (an encrypted session). `api`
  // must outlive the session. The remote's answer is info() (its
  // "previous" names the group's newest snapshot there).
  static Result<std::unique_ptr<RemoteBackup>> Start(client::ApiClient* api,
                                                     const std::string& group, int64_t time,
                                                     const nlohmann::json& crypt);
  // Aborts the session unless Finish succeeded (best effort).
  ~RemoteBackup();

  const nlohmann::json& info() const { return info_; }
  // The previous snapshot's index `archive`; its digests become known to
  // the session. NotFound without one, Conflict when its key differs.
  Result<std::string> PreviousIndex(const std::string& archive);
  // Uploads one chunk blob over `api`; true when the remote stored it as
  // new, false when it had it. InvalidArgument (the remote's 400) when it
  // refused the blob: CRC, digest or size do not match.
  Result<bool> UploadChunk(client::ApiClient& api, const Digest& digest, uint64_t size,
                           std::string_view blob);
  Status WriteIndex(const std::string& archive, std::string_view bytes);
  Status WriteBlob(const std::string& archive, std::string_view bytes);
  // Commits with `body` ({"client": …, "crypt": …}); the remote's answer.
  Result<nlohmann::json> Finish(const nlohmann::json& body);
  void Abort();

 private:
  RemoteBackup(client::ApiClient* api, nlohmann::json info, std::string id)
      : api_(api), info_(std::move(info)), id_(std::move(id)) {}
  client::ApiClient* const api_;
  const nlohmann::json info_;
  const std::string id_;
  bool done_ = false;
};

}  // namespace cairn::server
