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
// unusable (a late answer would be misread): reconnect and Sync() again.
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

  Status Sync(std::chrono::milliseconds timeout);

  // Runs one command; the "return" value, or InvalidArgument
  // "<command>: <desc> [<class>]" for an agent error; IOError on timeout/EOF.
  Result<nlohmann::json> Execute(std::string_view command, const nlohmann::json& arguments,
                                 std::chrono::milliseconds timeout);

  // guest-fsfreeze-status: "thawed" or "frozen".
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
