#include "client/nbd_reader.h"

#include <libnbd.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <vector>

#include "client/dynamic_library.h"

namespace cairn::client {

namespace {

// The libnbd functions used here, loaded from libnbd.so.0 at first use
// (client/dynamic_library.h).
#define CAIRN_LIBNBD_FUNCTIONS(X)                                                            \
  X(nbd_create) X(nbd_close) X(nbd_get_error) X(nbd_add_meta_context) X(nbd_set_export_name) \
  X(nbd_connect_unix) X(nbd_can_meta_context) X(nbd_get_size) X(nbd_block_status)            \
  X(nbd_aio_pread) X(nbd_aio_command_completed) X(nbd_poll) X(nbd_shutdown)
struct LibnbdApi {
  CAIRN_DYNAMIC_API(CAIRN_LIBNBD_FUNCTIONS)
};

Status BindLibnbd(const DynamicLibrary& lib, LibnbdApi* api) {
  CAIRN_DYNAMIC_BIND(CAIRN_LIBNBD_FUNCTIONS, lib, api);
  return Status::OK();
}

Result<const LibnbdApi*> LoadLibnbd() { return LoadOnce("libnbd.so.0", "libnbd0", BindLibnbd); }

// The table; only called once ReadNbdExport has loaded it.
const LibnbdApi& Nbd() { return **LoadLibnbd(); }

struct NbdCloser {
  void operator()(nbd_handle* h) const { Nbd().nbd_close(h); }
};
using NbdPtr = std::unique_ptr<nbd_handle, NbdCloser>;

Status NbdError(const std::string& what) {
  const char* msg = Nbd().nbd_get_error();
  return Status::IOError("NBD " + what + ": " + (msg != nullptr ? msg : "unknown error"));
}

// A piece of the export: read (and OnWrite) or zero (OnZero).
struct Segment {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;
};

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint32_t flags = 0;
};

struct ExtentSink {
  std::vector<Extent>* out;
  uint64_t next;
};

int OnExtents(void* user, const char* /*context*/, uint64_t offset, uint32_t* entries,
              size_t nr_entries, int* /*error*/) {
  auto* sink = static_cast<ExtentSink*>(user);
  uint64_t at = offset;
  for (size_t i = 0; i + 1 < nr_entries; i += 2) {
    sink->out->push_back({at, entries[i], entries[i + 1]});
    at += entries[i];
  }
  sink->next = at;
  return 0;
}

// Every extent of the export, in order, covering [0, size).
Result<std::vector<Extent>> QueryExtents(nbd_handle* h, uint64_t size) {
  constexpr uint64_t kWindow = 1u << 30;
  std::vector<Extent> extents;
  uint64_t offset = 0;
  while (offset < size) {
    uint64_t count = std::min(kWindow, size - offset);
    ExtentSink sink{&extents, offset};
    nbd_extent_callback cb = {.callback = OnExtents, .user_data = &sink, .free = nullptr};
    if (Nbd().nbd_block_status(h, count, offset, cb, 0) == -1) return NbdError("block status");
    if (sink.next <= offset) return Status::Corruption("NBD block status made no progress");
    offset = sink.next;
  }
  if (!extents.empty() && extents.back().offset + extents.back().length > size) {
    extents.back().length = size - extents.back().offset;
  }
  return extents;
}

// Full mode: data extents split at chunk edges, zero extents whole.
std::vector<Segment> FullSegments(const std::vector<Extent>& extents, uint64_t chunk) {
  std::vector<Segment> segs;
  for (const auto& e : extents) {
    if (e.length == 0) continue;
    if (e.flags & LIBNBD_STATE_ZERO) {
      segs.push_back({e.offset, e.length, true});
      continue;
    }
    uint64_t at = e.offset, end = e.offset + e.length;
    while (at < end) {
      uint64_t edge = (at / chunk + 1) * chunk;
      uint64_t n = std::min(edge, end) - at;
      segs.push_back({at, n, false});
      at += n;
    }
  }
  return segs;
}

// Dirty mode: each chunk touched by a dirty extent, whole (clamped to size).
std::vector<Segment> DirtySegments(const std::vector<Extent>& extents, uint64_t chunk,
                                   uint64_t size) {
  std::vector<Segment> segs;
  uint64_t last = UINT64_MAX;
  for (const auto& e : extents) {
    if (!(e.flags & 1) || e.length == 0) continue;
    for (uint64_t c = e.offset / chunk; c <= (e.offset + e.length - 1) / chunk; ++c) {
      if (c == last) continue;
      last = c;
      uint64_t off = c * chunk;
      segs.push_back({off, std::min(chunk, size - off), false});
    }
  }
  return segs;
}

struct Pending {
  Segment seg;
  std::string buf;
  int64_t cookie = 0;
};

Status Pump(nbd_handle* h, const std::vector<Segment>& segs, const NbdReadOptions& o,
            NbdSinkHandler* handler, NbdReadStats* stats) {
  std::deque<Pending> pending;
  size_t next = 0;
  const size_t depth = static_cast<size_t>(std::max(1, o.in_flight));
  while (next < segs.size() || !pending.empty()) {
    if (o.cancel != nullptr && o.cancel->load()) return Status::IOError("interrupted");
    while (next < segs.size() && pending.size() < depth) {
      Pending p;
      p.seg = segs[next++];
      if (!p.seg.zero) {
        p.buf.resize(p.seg.length);
        // NBD_NULL_COMPLETION is a C compound literal; spell it out for C++.
        const nbd_completion_callback no_completion{};
        p.cookie = Nbd().nbd_aio_pread(h, p.buf.data(), p.buf.size(), p.seg.offset,
                                 no_completion, 0);
        if (p.cookie == -1) return NbdError("read");
      }
      pending.push_back(std::move(p));
    }
    Pending& head = pending.front();
    if (!head.seg.zero) {
      for (;;) {
        int done = Nbd().nbd_aio_command_completed(h, head.cookie);
        if (done == -1) return NbdError("read at " + std::to_string(head.seg.offset));
        if (done == 1) break;
        if (Nbd().nbd_poll(h, -1) == -1) return NbdError("poll");
      }
      CAIRN_RETURN_IF_ERROR(handler->OnWrite(head.seg.offset, head.buf));
      stats->bytes_read += head.seg.length;
    } else {
      CAIRN_RETURN_IF_ERROR(handler->OnZero(head.seg.offset, head.seg.length));
      stats->bytes_zero += head.seg.length;
    }
    pending.pop_front();
  }
  return Status::OK();
}

}  // namespace

Status ReadNbdExport(const NbdReadOptions& options, uint64_t expected_size,
                     NbdSinkHandler* handler, NbdReadStats* stats) {
  CAIRN_RETURN_IF_ERROR(LoadLibnbd().status());
  NbdPtr h(Nbd().nbd_create());
  if (!h) return NbdError("create");
  if (Nbd().nbd_add_meta_context(h.get(), options.meta_context.c_str()) == -1 ||
      Nbd().nbd_set_export_name(h.get(), options.export_name.c_str()) == -1) {
    return NbdError("setup");
  }
  if (Nbd().nbd_connect_unix(h.get(), options.socket_path.c_str()) == -1) {
    return NbdError("connect to " + options.socket_path);
  }
  if (Nbd().nbd_can_meta_context(h.get(), options.meta_context.c_str()) != 1) {
    return Status::IOError("the NBD export " + options.export_name + " offers no meta context " +
                           options.meta_context);
  }
  int64_t size = Nbd().nbd_get_size(h.get());
  if (size < 0) return NbdError("size");
  stats->export_size = static_cast<uint64_t>(size);
  if (expected_size != 0 && static_cast<uint64_t>(size) != expected_size) {
    return Status::Corruption("the NBD export " + options.export_name + " has " +
                              std::to_string(size) + " bytes, the disk " +
                              std::to_string(expected_size));
  }
  CAIRN_ASSIGN_OR_RETURN(std::vector<Extent> extents,
                         QueryExtents(h.get(), static_cast<uint64_t>(size)));
  std::vector<Segment> segs =
      options.dirty ? DirtySegments(extents, options.chunk_size, static_cast<uint64_t>(size))
                    : FullSegments(extents, options.chunk_size);
  if (options.dirty) stats->chunks_dirty = segs.size();
  Status s = Pump(h.get(), segs, options, handler, stats);
  (void)Nbd().nbd_shutdown(h.get(), 0);
  return s;
}

}  // namespace cairn::client
