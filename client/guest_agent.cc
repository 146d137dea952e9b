#include "client/guest_agent.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>

#include "client/json_splitter.h"
#include "client/unix_socket.h"

namespace cairn::client {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// qemu-ga's answers are small (guest-get-fsinfo on a busy guest is a few
// KiB). A larger message is a broken or hostile guest, not an answer.
constexpr size_t kMaxMessageBytes = 1u << 20;
// qemu-ga puts this byte before the answer to guest-sync-delimited; sent by
// the client, it resets the agent's JSON parser. It never occurs in UTF-8.
constexpr char kSentinel = '\xff';

// Guest bytes in a message, escaped: they may be anything, and a Status
// message may end up in JSON or a terminal.
std::string Quote(const std::string& bytes) {
  return json(bytes).dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
}

std::string Describe(const json& m) {
  return m.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace).substr(0, 200);
}

}  // namespace

struct GuestAgent::Impl {
  int fd = -1;
  // Not OK once the connection is gone (EOF, socket error): every later
  // call returns it.
  Status broken;
  // False until Sync() succeeds, and again after a timeout or an answer
  // that could not be read: the next bytes may belong to an earlier command.
  bool in_sync = false;
  std::string out_of_sync_reason = "not synced yet";
  // Nesting deeper than 64 is refused there: it is not qemu-ga.
  JsonObjectSplitter splitter{"guest agent", kMaxMessageBytes};
  std::mt19937_64 rng{std::random_device{}()};

  Status Fail(Status error) {
    if (broken.ok()) broken = std::move(error);
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
    }
    return broken;
  }

  Status LoseSync(Status error) {
    in_sync = false;
    out_of_sync_reason = error.ToString();
    splitter.Reset();
    return error;
  }

  Status SendAll(std::string_view data, Clock::time_point deadline) {
    Result<SocketEnd> end = SocketSendAll(fd, data, deadline);
    if (!end.ok()) return Fail(end.status().WithContext("guest agent"));
    if (*end != SocketEnd::kDone) {
      // Part of a command may have gone out; the agent's parser is in an
      // unknown state until the next Sync() resets it with 0xFF.
      return LoseSync(Status::IOError("guest agent: timed out sending a command"));
    }
    return Status::OK();
  }

  // Reads what has arrived (up to 64 KiB) into *out, waiting until
  // `deadline`. Sets *timed_out instead of failing when nothing came.
  Status ReadSome(Clock::time_point deadline, std::string* out, bool* timed_out) {
    *timed_out = false;
    char buf[65536];
    size_t n = 0;
    Result<SocketEnd> end = SocketRecvSome(fd, buf, sizeof(buf), &n, deadline);
    if (!end.ok()) return Fail(end.status().WithContext("guest agent"));
    switch (*end) {
      case SocketEnd::kDone:
        out->assign(buf, n);
        return Status::OK();
      case SocketEnd::kClosed:
        return Fail(Status::IOError("guest agent: connection closed"));
      case SocketEnd::kTimedOut:
      case SocketEnd::kWoken:
        break;
    }
    *timed_out = true;
    return Status::OK();
  }

  // The next object after Sync(). Every failure here but EOF leaves the
  // stream in an unknown place, so it also loses sync.
  Result<json> NextMessage(Clock::time_point deadline, std::string_view waiting_for) {
    for (;;) {
      std::string text;
      Result<bool> got = splitter.Next(&text);
      if (!got.ok()) return LoseSync(got.status());
      if (*got) {
        json m = json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (m.is_discarded() || !m.is_object()) {
          return LoseSync(
              Status::Corruption("guest agent: malformed answer: " + Quote(text.substr(0, 200))));
        }
        return m;
      }
      std::string chunk;
      bool timed_out = false;
      CAIRN_RETURN_IF_ERROR(ReadSome(deadline, &chunk, &timed_out));
      if (timed_out) {
        return LoseSync(
            Status::IOError("guest agent: timed out waiting for " + std::string(waiting_for)));
      }
      splitter.Append(chunk.data(), chunk.size());
    }
  }
};

GuestAgent::GuestAgent(int fd) : impl_(std::make_unique<Impl>()) { impl_->fd = fd; }

GuestAgent::~GuestAgent() {
  if (impl_->fd >= 0) ::close(impl_->fd);
}

Result<std::unique_ptr<GuestAgent>> GuestAgent::Connect(const std::string& socket_path,
                                                        std::chrono::milliseconds timeout) {
  if (!IsUnixSocketPath(socket_path)) {
    return Status::InvalidArgument("guest agent socket path empty or too long for a unix socket: " +
                                   socket_path);
  }
  const auto deadline = Clock::now() + timeout;
  // Non-blocking connect, so a listener with a full backlog (QEMU serves one
  // client on the agent's chardev) cannot block past the deadline.
  Result<int> connected = ConnectUnixSocket(socket_path, deadline);
  if (!connected.ok()) return connected.status().WithContext("guest agent");
  const int fd = *connected;
  std::unique_ptr<GuestAgent> agent(new GuestAgent(fd));
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  CAIRN_RETURN_IF_ERROR(agent->Sync(std::max(left, std::chrono::milliseconds(0))));
  return agent;
}

Status GuestAgent::Sync(std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  if (!s.broken.ok()) return s.broken;
  const auto deadline = Clock::now() + timeout;
  s.in_sync = false;
  s.out_of_sync_reason = "a Sync() that did not finish";
  s.splitter.Reset();

  // Small positive ids: qemu-ga's `id` is an int, and some clients' JSON
  // goes through doubles.
  const int64_t id = static_cast<int64_t>(s.rng() % (int64_t{1} << 31)) + 1;
  // 0xFF first: it makes the agent drop any partial command an earlier
  // client left in its parser (the agent answers it with a parse error,
  // which, coming before the sentinel of our answer, is skipped below).
  json request = {{"execute", "guest-sync-delimited"}, {"arguments", {{"id", id}}}};
  CAIRN_RETURN_IF_ERROR(s.SendAll(std::string(1, kSentinel) + request.dump() + "\n", deadline));

  // Bytes before a sentinel are stale: answers to an earlier client's
  // commands, that 0xFF's parse error, a half-written answer. Each sentinel
  // resets the splitter; after one, objects other than {"return": id} are
  // dropped (a stale sync answer carries another id). Garbage after a
  // sentinel can only be stale too, so it waits for the next sentinel rather
  // than failing; the deadline bounds the wait, kMaxMessageBytes the memory.
  bool after_sentinel = false;
  for (;;) {
    std::string chunk;
    bool timed_out = false;
    CAIRN_RETURN_IF_ERROR(s.ReadSome(deadline, &chunk, &timed_out));
    if (timed_out) {
      return s.LoseSync(
          Status::IOError("guest agent: timed out waiting for the guest-sync-delimited answer"));
    }
    if (size_t at = chunk.rfind(kSentinel); at != std::string::npos) {
      s.splitter.Reset();
      after_sentinel = true;
      s.splitter.Append(chunk.data() + at + 1, chunk.size() - at - 1);
    } else if (after_sentinel) {
      s.splitter.Append(chunk.data(), chunk.size());
    } else {
      continue;
    }
    for (;;) {
      std::string text;
      Result<bool> got = s.splitter.Next(&text);
      if (!got.ok()) {
        s.splitter.Reset();
        after_sentinel = false;
        break;
      }
      if (!*got) break;
      json m = json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (m.is_discarded() || !m.is_object()) continue;
      auto r = m.find("return");
      if (r != m.end() && r->is_number_integer() && r->get<int64_t>() == id) {
        // Nothing legitimate follows: the agent has no events and we have
        // sent nothing else.
        s.splitter.Reset();
        s.in_sync = true;
        return Status::OK();
      }
    }
  }
}

Result<json> GuestAgent::Execute(std::string_view command, const json& arguments,
                                 std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  if (!s.broken.ok()) return s.broken;
  if (!s.in_sync) {
    return Status::IOError("guest agent: out of sync (" + s.out_of_sync_reason + "); Sync() first");
  }
  if (!arguments.is_null() && !arguments.is_object()) {
    return Status::InvalidArgument("guest agent: arguments must be an object");
  }
  const auto deadline = Clock::now() + timeout;
  // No "id" (qemu-ga 7.2 would echo it): with one command in flight and a
  // resync after every failure the answer order is enough, and nothing
  // depends on whether an older agent knows the member.
  json request = {{"execute", std::string(command)}};
  if (arguments.is_object() && !arguments.empty()) request["arguments"] = arguments;
  // dump() with replace: a command name that is not UTF-8 must not throw.
  CAIRN_RETURN_IF_ERROR(
      s.SendAll(request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", deadline));
  CAIRN_ASSIGN_OR_RETURN(json m, s.NextMessage(deadline, "the answer to " + std::string(command)));
  if (auto r = m.find("return"); r != m.end()) return std::move(*r);
  auto e = m.find("error");
  if (e == m.end()) {
    return s.LoseSync(Status::Corruption("guest agent: answer to " + std::string(command) +
                                         " is neither return nor error: " + Describe(m)));
  }
  std::string cls = "?";
  std::string desc = "(no description)";
  if (e->is_object()) {
    if (auto c = e->find("class"); c != e->end() && c->is_string()) cls = c->get<std::string>();
    if (auto d = e->find("desc"); d != e->end() && d->is_string()) desc = d->get<std::string>();
  }
  return Status::InvalidArgument(std::string(command) + ": " + desc + " [" + cls + "]");
}

Result<std::string> GuestAgent::FreezeStatus(std::chrono::milliseconds timeout) {
  CAIRN_ASSIGN_OR_RETURN(json r, Execute("guest-fsfreeze-status", json::object(), timeout));
  if (r.is_string()) {
    std::string v = r.get<std::string>();
    if (v == "thawed" || v == "frozen") return v;
  }
  return Status::Corruption("guest agent: guest-fsfreeze-status returned " + Describe(r));
}

namespace {

Result<int> CountFrom(std::string_view command, const json& r) {
  // nlohmann parses a non-negative integer as unsigned; a negative count is
  // as wrong as a string.
  if (r.is_number_unsigned() && r.get<uint64_t>() <= uint64_t{std::numeric_limits<int>::max()}) {
    return static_cast<int>(r.get<uint64_t>());
  }
  return Status::Corruption("guest agent: " + std::string(command) + " returned " + Describe(r));
}

}  // namespace

Result<int> GuestAgent::Freeze(std::chrono::milliseconds timeout) {
  CAIRN_ASSIGN_OR_RETURN(json r, Execute("guest-fsfreeze-freeze", json::object(), timeout));
  return CountFrom("guest-fsfreeze-freeze", r);
}

Result<int> GuestAgent::Thaw(std::chrono::milliseconds timeout) {
  CAIRN_ASSIGN_OR_RETURN(json r, Execute("guest-fsfreeze-thaw", json::object(), timeout));
  return CountFrom("guest-fsfreeze-thaw", r);
}

}  // namespace cairn::client
