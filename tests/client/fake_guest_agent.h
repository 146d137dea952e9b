#pragma once

// FakeGuestAgent: a stand-in for qemu-ga on the host end of its channel,
// for unit tests of GuestAgent and for integration tests that run the
// `cairn` binary with a guest agent socket.
//
// It listens on a unix socket and serves one connection at a time on its own
// thread (like QEMU's chardev: a second client waits in the backlog). It
// speaks qemu-ga's wire protocol as QEMU 7.2's agent does:
// - input is a stream of JSON objects, no framing; a 0xFF (or 0xFE) byte
//   anywhere drops the partial input and is answered with a parse error,
//   {"error": {"class": "GenericError", "desc": "JSON parse error, stray
//   '\uFFFD'"}} and "\n", byte for byte what qemu-ga 7.2.22 sends for the
//   0xFF a client puts before guest-sync-delimited (qemu-ga's desc quotes
//   the partial token, if any, before the 0xFF; the fake's never does);
//   other bytes that cannot start an object get a parse error each
//   (qemu-ga: one per bad token);
// - each answer is one JSON object, ASCII only, and "\n"; the answer to
//   guest-sync-delimited is preceded by a 0xFF byte; a command's "id"
//   member is echoed after the result, as in `{"return": {}, "id": 7}`.
//   Spacing is QEMU's, so the answers used here are byte for byte qemu-ga's
//   (checked by hand against 7.2.22; client/INGEST.md §8).
// Commands: guest-sync-delimited, guest-sync, guest-ping, guest-info,
// guest-fsfreeze-status, guest-fsfreeze-freeze (error while frozen, as real
// qemu-ga disables it then), guest-fsfreeze-thaw (0 when thawed). Others
// are CommandNotFound.
//
// Knobs (SetBehavior, per command): delay, hang, close, error, raw bytes.
// SetStaleBeforeSync() sends bytes before the next sync answer's 0xFF.
// Every command read is recorded with the time it was read (commands()),
// before it is answered, so once a client has an answer, its command is
// recorded.
//
// Header-only because the unit test helper library only globs tests/storage.
// Thread safety: every public method may be called from any thread.

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace cairn::client::testing {

class FakeGuestAgent {
 public:
  using Clock = std::chrono::steady_clock;
  using json = nlohmann::json;

  struct Command {
    std::string name;      // the "execute" member
    json arguments;        // null when the command had none
    Clock::time_point at;  // when the fake read it
  };

  // How the fake answers a command. Applied in this order: `delay`, then the
  // first of `close`, `hang`, `raw`, `error` that is set, else the normal
  // answer.
  struct Behavior {
    std::chrono::milliseconds delay{0};  // before answering (or closing, hanging)
    bool close = false;                  // close the connection, no answer
    // No answer, and the rest of this connection's input is read and ignored
    // (an agent stuck in the command). Served again after the client
    // disconnects.
    bool hang = false;
    std::optional<std::string> raw;    // these bytes instead of the answer
    std::optional<std::string> error;  // {"error": {"class": "GenericError", "desc": *error}}
    // For close/hang/raw: whether the command still takes effect (a freeze
    // that freezes the guest although its answer never comes).
    bool takes_effect = false;
    // Applies to this many commands, then the default returns; -1 = always.
    int times = -1;
  };

  // Starts listening on `socket_path` (which must not exist). On failure
  // listening() is false and stderr says why.
  explicit FakeGuestAgent(std::string socket_path) : path_(std::move(socket_path)) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (listen_fd_ < 0 || wake_fd_ < 0 || path_.size() >= sizeof(addr.sun_path)) {
      Problem("socket/eventfd/path");
      return;
    }
    std::memcpy(addr.sun_path, path_.data(), path_.size());
    if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_, 4) != 0) {
      Problem("bind/listen " + path_);
      return;
    }
    bound_ = true;
    thread_ = std::thread([this] { Serve(); });
  }

  ~FakeGuestAgent() {
    stop_ = true;
    if (wake_fd_ >= 0) {
      uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
    }
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (bound_) ::unlink(path_.c_str());
  }

  FakeGuestAgent(const FakeGuestAgent&) = delete;
  FakeGuestAgent& operator=(const FakeGuestAgent&) = delete;

  bool listening() const { return bound_; }
  const std::string& socket_path() const { return path_; }

  // --- Knobs ---

  void SetBehavior(const std::string& command, Behavior behavior) {
    std::lock_guard<std::mutex> lock(mu_);
    behaviors_[command] = std::move(behavior);
  }
  void ClearBehavior(const std::string& command) {
    std::lock_guard<std::mutex> lock(mu_);
    behaviors_.erase(command);
  }
  // Shorthands for the freeze knobs.
  void HangOnFreeze(bool takes_effect = false) {
    Behavior b;
    b.hang = true;
    b.takes_effect = takes_effect;
    SetBehavior("guest-fsfreeze-freeze", b);
  }
  void FailFreeze(const std::string& desc) {
    Behavior b;
    b.error = desc;
    SetBehavior("guest-fsfreeze-freeze", b);
  }
  // Bytes sent once, just before the 0xFF of the next guest-sync-delimited
  // answer: what an earlier client left unread in the channel.
  void SetStaleBeforeSync(std::string bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    stale_before_sync_ = std::move(bytes);
  }
  // The guest's state, as if an earlier run had left it frozen.
  void SetFrozen(bool frozen) {
    std::lock_guard<std::mutex> lock(mu_);
    frozen_ = frozen;
  }
  // What freeze and thaw report (the guest's number of file systems).
  void SetFileSystems(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    file_systems_ = n;
  }

  // --- What happened ---

  std::vector<Command> commands() const {
    std::lock_guard<std::mutex> lock(mu_);
    return commands_;
  }
  // Just the names, in order.
  std::vector<std::string> command_names() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> names;
    for (const Command& c : commands_) names.push_back(c.name);
    return names;
  }
  bool frozen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return frozen_;
  }
  // Freezes that froze the guest; thaw commands that succeeded (thawing a
  // thawed guest included).
  int freeze_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return freeze_count_;
  }
  int thaw_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return thaw_count_;
  }
  // Parse errors answered (one per client 0xFF, among others).
  int parse_errors() const {
    std::lock_guard<std::mutex> lock(mu_);
    return parse_errors_;
  }
  // Connections accepted so far.
  int connections() const {
    std::lock_guard<std::mutex> lock(mu_);
    return connections_;
  }
  // Waits until `count` commands named `name` have been read.
  bool WaitForCommand(const std::string& name, int count, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      return std::count_if(commands_.begin(), commands_.end(),
                           [&](const Command& c) { return c.name == name; }) >= count;
    });
  }

 private:
  static constexpr size_t kMaxInput = 1u << 20;

  void Problem(const std::string& what) {
    // Not gtest's ADD_FAILURE: integration helpers may run outside a test
    // body; listening() tells the caller.
    problem_ = what + ": " + std::strerror(errno);
    std::fprintf(stderr, "FakeGuestAgent: %s\n", problem_.c_str());
  }

  // Waits for `fd` to be ready for `events`, or for the stop signal, or
  // `timeout_ms` (-1 = none). True when fd is ready.
  bool WaitFd(int fd, short events, int timeout_ms) {
    pollfd p[2] = {{fd, events, 0}, {wake_fd_, POLLIN, 0}};
    for (;;) {
      if (stop_) return false;
      int r = ::poll(p, 2, timeout_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || stop_) return false;
      return (p[0].revents & (events | POLLHUP | POLLERR)) != 0;
    }
  }

  // Sleeps, but wakes up for the destructor.
  void Sleep(std::chrono::milliseconds d) {
    auto until = Clock::now() + d;
    while (!stop_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      if (left.count() <= 0) return;
      pollfd p{wake_fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    }
  }

  bool SendAll(int fd, std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!WaitFd(fd, POLLOUT, -1)) return false;
        continue;
      }
      return false;
    }
    return true;
  }

  void Serve() {
    while (!stop_) {
      if (!WaitFd(listen_fd_, POLLIN, -1)) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) continue;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++connections_;
      }
      ServeConnection(fd);
      ::close(fd);
    }
  }

  void ServeConnection(int fd) {
    // The input splitter: like QEMU's JSON streamer, it needs no newlines.
    std::string input;
    int depth = 0;
    bool in_string = false, escape = false;
    bool hanging = false;
    for (;;) {
      if (!WaitFd(fd, POLLIN, -1)) return;
      char buf[65536];
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n == 0) return;
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        return;
      }
      if (hanging) continue;
      for (ssize_t i = 0; i < n; ++i) {
        const char c = buf[i];
        const auto u = static_cast<unsigned char>(c);
        if (u == 0xFF || u == 0xFE) {
          // QEMU's lexer: an impossible UTF-8 byte is an error token that
          // flushes the parser; qemu-ga answers the error.
          input.clear();
          depth = 0;
          in_string = escape = false;
          if (!SendParseError(fd, kStrayByteError)) return;
          continue;
        }
        if (depth == 0 && !in_string) {
          if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
          if (c != '{') {
            const std::string stray = u >= 0x20 && u < 0x7F ? std::string(1, c) : "?";
            if (!SendParseError(fd, ParseError("JSON parse error, stray '" + stray + "'"))) {
              return;
            }
            continue;
          }
        }
        input.push_back(c);
        if (in_string) {
          if (escape) {
            escape = false;
          } else if (c == '\\') {
            escape = true;
          } else if (c == '"') {
            in_string = false;
          }
        } else if (c == '"') {
          in_string = true;
        } else if (c == '{' || c == '[') {
          ++depth;
        } else if (c == '}' || c == ']') {
          if (--depth == 0) {
            std::string text;
            text.swap(input);
            switch (Handle(fd, text)) {
              case Next::kContinue:
                break;
              case Next::kClose:
                return;
              case Next::kHang:
                hanging = true;
                break;
            }
            if (hanging) break;
          }
        }
        if (input.size() > kMaxInput) {
          input.clear();
          depth = 0;
          in_string = escape = false;
          if (!SendParseError(fd, ParseError("JSON token size limit reached"))) return;
        }
      }
    }
  }

  // The answer qemu-ga 7.2.22 gives to a 0xFF byte, byte for byte (QEMU
  // writes the invalid byte as U+FFFD, escaped).
  static constexpr std::string_view kStrayByteError =
      "{\"error\": {\"class\": \"GenericError\", "
      "\"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n";

  // Sends a parse error `answer` (ParseError(desc), or kStrayByteError).
  bool SendParseError(int fd, std::string_view answer) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++parse_errors_;
    }
    return SendAll(fd, answer);
  }
  static std::string ParseError(const std::string& desc) {
    return ErrorAnswer("GenericError", desc, json());
  }

  // JSON as QEMU writes it: ", " and ": " between members, ASCII only.
  static std::string QemuStyle(const json& v) {
    if (v.is_object()) {
      std::string out = "{";
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (it != v.begin()) out += ", ";
        out += QemuStyle(json(it.key())) + ": " + QemuStyle(it.value());
      }
      return out + "}";
    }
    if (v.is_array()) {
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) out += (i > 0 ? ", " : "") + QemuStyle(v[i]);
      return out + "]";
    }
    return v.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
  }
  static std::string IdMember(const json& id) {
    return id.is_null() ? "" : ", \"id\": " + QemuStyle(id);
  }
  static std::string ErrorAnswer(const std::string& cls, const std::string& desc, const json& id) {
    return "{\"error\": {\"class\": " + QemuStyle(json(cls)) +
           ", \"desc\": " + QemuStyle(json(desc)) + "}" + IdMember(id) + "}\n";
  }
  static std::string ReturnAnswer(const json& value, const json& id) {
    return "{\"return\": " + QemuStyle(value) + IdMember(id) + "}\n";
  }

  enum class Next { kContinue, kClose, kHang };

  // One complete object from the client.
  Next Handle(int fd, const std::string& text) {
    json req = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (req.is_discarded() || !req.is_object()) {
      return SendParseError(fd, ParseError("JSON parse error")) ? Next::kContinue : Next::kClose;
    }
    json id = req.contains("id") ? req["id"] : json();
    auto ex = req.find("execute");
    if (ex == req.end() || !ex->is_string()) {
      return SendAll(fd, ErrorAnswer("GenericError", "QMP input lacks member 'execute'", id))
                 ? Next::kContinue
                 : Next::kClose;
    }
    const std::string name = ex->get<std::string>();
    json args = req.contains("arguments") ? req["arguments"] : json();

    std::optional<Behavior> behavior;
    {
      std::lock_guard<std::mutex> lock(mu_);
      commands_.push_back(Command{name, args, Clock::now()});
      if (auto it = behaviors_.find(name); it != behaviors_.end()) {
        behavior = it->second;
        if (it->second.times > 0 && --it->second.times == 0) behaviors_.erase(it);
      }
    }
    cv_.notify_all();

    std::string answer;
    bool delimited = false;
    if (behavior) {
      Sleep(behavior->delay);
      if (stop_) return Next::kClose;
      if (behavior->close || behavior->hang || behavior->raw) {
        if (behavior->takes_effect) Run(name, args, id, &answer, &delimited);
        if (behavior->close) return Next::kClose;
        if (behavior->hang) return Next::kHang;
        return SendAll(fd, *behavior->raw) ? Next::kContinue : Next::kClose;
      }
      if (behavior->error) {
        return SendAll(fd, ErrorAnswer("GenericError", *behavior->error, id)) ? Next::kContinue
                                                                              : Next::kClose;
      }
    }
    Run(name, args, id, &answer, &delimited);
    std::string out;
    if (delimited) {
      std::lock_guard<std::mutex> lock(mu_);
      out = std::move(stale_before_sync_);
      stale_before_sync_.clear();
      out.push_back('\xff');
    }
    out += answer;
    return SendAll(fd, out) ? Next::kContinue : Next::kClose;
  }

  // Runs a command on the fake guest; *answer is the wire answer.
  void Run(const std::string& name, const json& args, const json& id, std::string* answer,
           bool* delimited) {
    std::lock_guard<std::mutex> lock(mu_);
    *delimited = false;
    auto sync_id = [&]() -> const json* {
      if (!args.is_object()) return nullptr;
      auto it = args.find("id");
      return it != args.end() && it->is_number_integer() ? &*it : nullptr;
    };
    if (name == "guest-sync-delimited" || name == "guest-sync") {
      const json* v = sync_id();
      if (v == nullptr) {
        *answer = ErrorAnswer("GenericError", "Parameter 'id' is missing", id);
        return;
      }
      *delimited = name == "guest-sync-delimited";
      *answer = ReturnAnswer(*v, id);
    } else if (name == "guest-ping") {
      *answer = ReturnAnswer(json::object(), id);
    } else if (name == "guest-info") {
      *answer = ReturnAnswer({{"version", "7.2.0"}, {"supported_commands", json::array()}}, id);
    } else if (name == "guest-fsfreeze-status") {
      *answer = ReturnAnswer(frozen_ ? "frozen" : "thawed", id);
    } else if (name == "guest-fsfreeze-freeze") {
      if (frozen_) {
        // qemu-ga disables every command but a few while frozen.
        *answer = ErrorAnswer("CommandNotFound",
                              "Command guest-fsfreeze-freeze has been disabled: "
                              "the agent is in frozen state",
                              id);
        return;
      }
      frozen_ = true;
      ++freeze_count_;
      *answer = ReturnAnswer(file_systems_, id);
    } else if (name == "guest-fsfreeze-thaw") {
      const int n = frozen_ ? file_systems_ : 0;
      frozen_ = false;
      ++thaw_count_;
      *answer = ReturnAnswer(n, id);
    } else {
      *answer = ErrorAnswer("CommandNotFound", "The command " + name + " has not been found", id);
    }
  }

  const std::string path_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  bool bound_ = false;
  std::string problem_;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Behavior> behaviors_;  // GUARDED_BY(mu_)
  std::string stale_before_sync_;              // GUARDED_BY(mu_)
  std::vector<Command> commands_;              // GUARDED_BY(mu_)
  bool frozen_ = false;                        // GUARDED_BY(mu_)
  int file_systems_ = 2;                       // GUARDED_BY(mu_)
  int freeze_count_ = 0;                       // GUARDED_BY(mu_)
  int thaw_count_ = 0;                         // GUARDED_BY(mu_)
  int parse_errors_ = 0;                       // GUARDED_BY(mu_)
  int connections_ = 0;                        // GUARDED_BY(mu_)
};

}  // namespace cairn::client::testing
