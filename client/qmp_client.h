#pragma once

// QmpClient: a QEMU Machine Protocol client over a unix socket.
//
// Connect() reads QEMU's greeting and negotiates capabilities
// (`qmp_capabilities`). Execute() sends one command and waits for its answer;
// events that arrive meanwhile are queued, and WaitEvent() takes them from the
// queue (or waits for them). The wire format is a stream of JSON objects;
// the reader does not rely on newlines, copes with partial reads and several
// objects in one read, and bounds message size and nesting depth.
//
// Errors:
// - QEMU answered with {"error": {"class", "desc"}} → NotFound for the classes
//   CommandNotFound and DeviceNotFound, InvalidArgument otherwise; the message
//   is "<command>: <desc> [<class>]". ExecuteRaw() returns the whole answer for
//   callers that need the class.
// - Nothing within the timeout → IOError ("timed out ..."). The connection stays
//   usable: a late answer carries the old id and is dropped.
// - EOF, a socket error, or bytes that are not QMP (malformed JSON, a message
//   over the size limit, a non-object) → IOError / Corruption, and the client is
//   closed: every later call returns that same error. Hostile input never
//   crashes and never makes the client allocate more than the size limit.
//
// Thread safety: not thread-safe; one thread uses a QmpClient at a time.
// Ownership: the client owns its socket and closes it on destruction.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/json_splitter.h"
#include "storage/status.h"

namespace cairn::client {

using storage::Result;
using storage::Status;

class QmpClient {
 public:
  struct Options {
    // Bound on every wait: connecting, the greeting, each command, each read.
    std::chrono::milliseconds timeout{60000};
    // Connect() retries a socket that does not exist yet or refuses (QEMU is
    // still starting) until this much time has passed; 0 = one attempt.
    std::chrono::milliseconds connect_wait{0};
    // A single QMP message larger than this is Corruption. query-qmp-schema
    // on QEMU 7.2 is about 200 KiB.
    size_t max_message_bytes = 16u << 20;
    // Events beyond this many are dropped, oldest first (dropped_events()).
    size_t max_queued_events = 4096;
  };

  // Connects to QEMU's QMP socket at `socket_path`, reads the greeting and
  // leaves the client in command mode. InvalidArgument for a path too long
  // for a unix socket; NotFound when the socket does not exist, IOError when
  // nothing answers in time; Corruption when the peer does not speak QMP.
  static Result<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path,
                                                    const Options& options);
  static Result<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path) {
    return Connect(socket_path, Options());
  }

  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // The greeting's "QMP" object: {"version": {"qemu": {"major", ...}, ...},
  // "capabilities": [...]}.
  const nlohmann::json& greeting() const { return greeting_; }
  // QEMU's version from the greeting as {major, minor, micro}.
  struct Version {
    int major = 0, minor = 0, micro = 0;
  };
  Version version() const { return version_; }

  // Runs `command` with `arguments` (an object; empty = none) and returns the
  // "return" value. Errors as described above.
  Result<nlohmann::json> Execute(std::string_view command,
                                 const nlohmann::json& arguments = nlohmann::json::object());
  Result<nlohmann::json> Execute(std::string_view command, const nlohmann::json& arguments,
                                 std::chrono::milliseconds timeout);

  // Like Execute, but a QEMU error is not a Status: returns QEMU's whole
  // answer ({"return": ...} or {"error": {...}}). Transport errors are Status.
  Result<nlohmann::json> ExecuteRaw(std::string_view command, const nlohmann::json& arguments,
                                    std::chrono::milliseconds timeout);

  // Runs an HMP command line through `human-monitor-command` and returns its
  // output text. HMP reports many failures only in that text (for example
  // qemu-io's "write failed: ..."); the caller inspects it.
  Result<std::string> Hmp(std::string_view command_line);

  // Returns the first queued event named `name` for which `predicate` (if
  // set) is true, removing it from the queue; other events stay queued in
  // order. Waits for more input until `timeout` passes → IOError.
  Result<nlohmann::json> WaitEvent(std::string_view name,
                                   const std::function<bool(const nlohmann::json&)>& predicate,
                                   std::chrono::milliseconds timeout);
  Result<nlohmann::json> WaitEvent(std::string_view name, std::chrono::milliseconds timeout) {
    return WaitEvent(name, nullptr, timeout);
  }

  // Reads whatever QEMU has sent already, without waiting, and queues its
  // events. Returns the connection's error if it is broken.
  Status Poll();

  // Removes and returns every queued event, oldest first.
  std::vector<nlohmann::json> TakeEvents();
  uint64_t dropped_events() const { return dropped_events_; }

  // OK while the connection is usable; otherwise the error that ended it.
  Status status() const { return broken_; }

 private:
  QmpClient(int fd, const Options& options);

  using Clock = std::chrono::steady_clock;

  Status SendAll(std::string_view data, Clock::time_point deadline);
  // Returns the next complete message, reading as needed until `deadline`.
  // A parsed event is returned like any message; callers route it.
  Result<nlohmann::json> NextMessage(Clock::time_point deadline, const char* waiting_for);
  // Reads once from the socket if data arrives before `deadline`. Sets
  // *timed_out instead of failing when nothing came.
  Status ReadSome(Clock::time_point deadline, bool* timed_out);
  void QueueEvent(nlohmann::json event);
  Status Fail(Status error);

  int fd_ = -1;
  Options options_;
  nlohmann::json greeting_;
  Version version_;
  Status broken_;  // OK until the connection is unusable
  uint64_t next_id_ = 1;

  // Input not yet split into messages (bounded by max_message_bytes).
  JsonObjectSplitter splitter_;

  std::deque<nlohmann::json> events_;
  uint64_t dropped_events_ = 0;
};

}  // namespace cairn::client
