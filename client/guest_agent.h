#pragma once

// GuestAgent: the client's side of the QEMU guest agent protocol (qemu-ga)
// over the host end of its virtio-serial channel, a unix socket
// (DESIGN.md §4 "Guest agent").
//
// The channel is a byte stream that may hold stale bytes from an earlier
// peer: Sync() sends 0xFF and `guest-sync-delimited` with a random id, then
// discards everything up to the 0xFF the agent puts before its answer, and
// answers whose id is not ours. Commands are JSON objects
// ({"execute": ..., "arguments": ...}); answers {"return": ...} or
// {"error": {"class", "desc"}}.
//
// Every wait has a deadline. A timeout is IOError and the agent is then
// out of sync (a late answer would be misread): Execute() and the helpers
// return IOError until Sync() succeeds again, on this connection or a new
// one. An answer that is not qemu-ga's (garbage, a message over 1 MiB,
// nesting over 64) is Corruption and also loses sync; hostile bytes never
// crash. EOF or a socket error is final: every later call returns it.
//
// A Freeze() that timed out may still freeze the guest later (the agent
// finishes the command): Sync() and Thaw() on every exit path.
//
// Thread safety: not thread-safe. Ownership: owns its socket.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "storage/status.h"

namespace cairn::client {

using storage::Result;
using storage::Status;

class GuestAgent {
 public:
  // Connects to the socket (NotFound if it does not exist, IOError if it
  // cannot be connected) and runs Sync() within `timeout`.
  static Result<std::unique_ptr<GuestAgent>> Connect(const std::string& socket_path,
                                                     std::chrono::milliseconds timeout);
  ~GuestAgent();
  GuestAgent(const GuestAgent&) = delete;
  GuestAgent& operator=(const GuestAgent&) = delete;

  // Resynchronizes the stream as described above; IOError when the answer
  // does not come within `timeout`.
  Status Sync(std::chrono::milliseconds timeout);

  // Runs one command (`arguments` an object, or null/empty for none); the
  // "return" value, or InvalidArgument "<command>: <desc> [<class>]" for an
  // agent error (the agent stays in sync); IOError on timeout/EOF.
  Result<nlohmann::json> Execute(std::string_view command, const nlohmann::json& arguments,
                                 std::chrono::milliseconds timeout);

  // guest-fsfreeze-status: "thawed" or "frozen" (anything else is Corruption).
  Result<std::string> FreezeStatus(std::chrono::milliseconds timeout);
  // guest-fsfreeze-freeze: the number of file systems frozen.
  Result<int> Freeze(std::chrono::milliseconds timeout);
  // guest-fsfreeze-thaw: the number of file systems thawed.
  Result<int> Thaw(std::chrono::milliseconds timeout);

 private:
  explicit GuestAgent(int fd);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::client
