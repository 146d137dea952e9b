#pragma once

// One disk image of a snapshot, read for a download chunk by chunk
// (GET /datastores/{store}/download): the restore path of the server side.
// It holds a reader session (server/reader_session.h), so the snapshot stays
// pinned (not deleted or pruned) while it is read and the per-token reader
// limit applies; destroying the download ends the session.
//
// Every chunk is decoded and its SHA-256 and length checked against the
// index before its bytes are handed out; a chunk that fails gives an error,
// never wrong bytes. The all-zero chunk is not read: its digest is known.
//
// Thread safety: Chunk may be called from one thread at a time.

#include <cstdint>
#include <memory>
#include <string>

#include "server/reader_session.h"
#include "storage/fixed_index.h"

namespace cairn::server {

class SessionManager;

class ImageDownload {
 public:
  // InvalidArgument unless `archive` is a ".fidx" archive name; NotFound when
  // the snapshot does not list it; Corruption when its index does not parse.
  // REQUIRES: `reader` is a session of `sessions`, which outlives this.
  static Result<std::unique_ptr<ImageDownload>> Open(std::shared_ptr<ReaderSession> reader,
                                                     SessionManager* sessions,
                                                     const std::string& archive);
  ~ImageDownload();
  ImageDownload(const ImageDownload&) = delete;
  ImageDownload& operator=(const ImageDownload&) = delete;

  uint64_t size() const { return index_.image_size(); }
  uint64_t chunk_size() const { return index_.chunk_size(); }
  // "TYPE-ID-TIME-DISK.img" with ':' and '/' made '-' (names are checked
  // already, so nothing else needs quoting).
  std::string FileName() const;

  // The plaintext of chunk `i` (ChunkLength(i) bytes), its digest checked.
  // Corruption (naming the chunk and snapshot) for a chunk whose blob does
  // not decode or whose digest or length differ; NotFound for a missing one.
  // REQUIRES: i < the index's chunk count.
  Result<std::string> Chunk(uint64_t i, int64_t now);

 private:
  ImageDownload(std::shared_ptr<ReaderSession> reader, SessionManager* sessions,
                std::string archive, storage::FixedIndex index)
      : reader_(std::move(reader)), sessions_(sessions), archive_(std::move(archive)),
        index_(std::move(index)) {}

  const std::shared_ptr<ReaderSession> reader_;
  SessionManager* const sessions_;
  const std::string archive_;
  const storage::FixedIndex index_;
};

}  // namespace cairn::server
