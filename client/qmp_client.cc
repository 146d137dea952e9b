#include "client/qmp_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

namespace cairn::client {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Deeper nesting than this is not QMP; it would only make the JSON parser and
// the destructor of the parsed value recurse.

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  // Round up so a sub-millisecond remainder still waits instead of spinning.
  return static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
}

Result<int> ConnectOnce(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket", errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno("connect " + path, err);
  }
  // Non-blocking, so a read after poll() never blocks past the deadline.
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno("fcntl", err);
  }
  return fd;
}

Status ErrorFromQemu(std::string_view command, const json& error) {
  std::string cls = "?";
  std::string desc = "(no description)";
  if (error.is_object()) {
    auto c = error.find("class");
    if (c != error.end() && c->is_string()) cls = c->get<std::string>();
    auto d = error.find("desc");
    if (d != error.end() && d->is_string()) desc = d->get<std::string>();
  }
  std::string msg = std::string(command) + ": " + desc + " [" + cls + "]";
  if (cls == "CommandNotFound" || cls == "DeviceNotFound") return Status::NotFound(msg);
  return Status::InvalidArgument(msg);
}

bool IsEvent(const json& m) { return m.contains("event"); }
bool IsAnswer(const json& m) { return m.contains("return") || m.contains("error"); }

}  // namespace

QmpClient::QmpClient(int fd, const Options& options)
    : fd_(fd), options_(options), splitter_("QMP", options.max_message_bytes) {}

QmpClient::~QmpClient() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path,
                                                      const Options& options) {
  if (socket_path.empty() || socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidArgument("QMP socket path empty or too long for a unix socket: " +
                                   socket_path);
  }
  auto connect_until = Clock::now() + options.connect_wait;
  Result<int> fd = ConnectOnce(socket_path);
  while (!fd.ok() && Clock::now() < connect_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    fd = ConnectOnce(socket_path);
  }
  if (!fd.ok()) return fd.status();
  std::unique_ptr<QmpClient> client(new QmpClient(*fd, options));

  auto deadline = Clock::now() + options.timeout;
  CAIRN_ASSIGN_OR_RETURN(json greeting, client->NextMessage(deadline, "the QMP greeting"));
  auto qmp = greeting.find("QMP");
  if (qmp == greeting.end() || !qmp->is_object()) {
    return client->Fail(
        Status::Corruption("not a QMP greeting: " + greeting.dump().substr(0, 200)));
  }
  client->greeting_ = *qmp;
  // The version is informative; a greeting without it is still QMP.
  const json* q = nullptr;
  if (auto v = qmp->find("version"); v != qmp->end() && v->is_object()) {
    if (auto qe = v->find("qemu"); qe != v->end() && qe->is_object()) q = &*qe;
  }
  if (q != nullptr) {
    auto field = [q](const char* key) {
      auto it = q->find(key);
      return it != q->end() && it->is_number_integer() ? it->get<int>() : 0;
    };
    client->version_ = Version{field("major"), field("minor"), field("micro")};
  }
  CAIRN_RETURN_IF_ERROR(client->Execute("qmp_capabilities").status());
  return client;
}

Status QmpClient::Fail(Status error) {
  if (broken_.ok()) broken_ = error;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  return broken_;
}

Status QmpClient::SendAll(std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      int ms = RemainingMs(deadline);
      if (ms == 0) return Fail(Status::IOError("QMP: timed out sending a command"));
      int r = ::poll(&p, 1, ms);
      if (r < 0 && errno != EINTR) return Fail(Status::FromErrno("QMP poll", errno));
      continue;
    }
    return Fail(Status::FromErrno("QMP send", errno));
  }
  return Status::OK();
}

Status QmpClient::ReadSome(Clock::time_point deadline, bool* timed_out) {
  *timed_out = false;
  for (;;) {
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      splitter_.Append(buf, static_cast<size_t>(n));
      return Status::OK();
    }
    if (n == 0) return Fail(Status::IOError("QMP: connection closed by QEMU"));
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Fail(Status::FromErrno("QMP recv", errno));
    int ms = RemainingMs(deadline);
    if (ms == 0) {
      *timed_out = true;
      return Status::OK();
    }
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, ms);
    if (r < 0 && errno != EINTR) return Fail(Status::FromErrno("QMP poll", errno));
  }
}

Result<json> QmpClient::NextMessage(Clock::time_point deadline, const char* waiting_for) {
  if (!broken_.ok()) return broken_;
  for (;;) {
    std::string text;
    Result<bool> got = splitter_.Next(&text);
    if (!got.ok()) return Fail(got.status());
    if (*got) {
      json m = json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (m.is_discarded() || !m.is_object()) {
        return Fail(Status::Corruption("QMP: malformed message: " + text.substr(0, 200)));
      }
      return m;
    }
    bool timed_out = false;
    CAIRN_RETURN_IF_ERROR(ReadSome(deadline, &timed_out));
    if (timed_out) {
      return Status::IOError(std::string("QMP: timed out waiting for ") + waiting_for);
    }
  }
}

void QmpClient::QueueEvent(json event) {
  if (events_.size() >= options_.max_queued_events && !events_.empty()) {
    events_.pop_front();
    ++dropped_events_;
  }
  events_.push_back(std::move(event));
}

Result<json> QmpClient::ExecuteRaw(std::string_view command, const json& arguments,
                                   std::chrono::milliseconds timeout) {
  if (!broken_.ok()) return broken_;
  if (!arguments.is_null() && !arguments.is_object()) {
    return Status::InvalidArgument("QMP arguments must be an object");
  }
  const uint64_t id = next_id_++;
  json request = {{"execute", std::string(command)}, {"id", id}};
  if (arguments.is_object() && !arguments.empty()) request["arguments"] = arguments;
  auto deadline = Clock::now() + timeout;
  // dump() with replace: a command string that is not UTF-8 must not throw.
  CAIRN_RETURN_IF_ERROR(
      SendAll(request.dump(-1, ' ', false, json::error_handler_t::replace) + "\r\n", deadline));
  std::string waiting_for = "the answer to " + std::string(command);
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(json m, NextMessage(deadline, waiting_for.c_str()));
    if (IsEvent(m)) {
      QueueEvent(std::move(m));
      continue;
    }
    if (!IsAnswer(m)) {
      return Fail(Status::Corruption("QMP: message is neither event nor answer: " +
                                     m.dump().substr(0, 200)));
    }
    auto it = m.find("id");
    // QEMU omits the id only when it could not parse the command; one command
    // is in flight at a time, so such an answer is ours.
    if (it == m.end()) return m;
    if (it->is_number_unsigned() && it->get<uint64_t>() == id) return m;
    // An answer to an earlier command that timed out: drop it.
  }
}

Result<json> QmpClient::Execute(std::string_view command, const json& arguments,
                                std::chrono::milliseconds timeout) {
  CAIRN_ASSIGN_OR_RETURN(json m, ExecuteRaw(command, arguments, timeout));
  if (auto e = m.find("error"); e != m.end()) return ErrorFromQemu(command, *e);
  return m["return"];
}

Result<json> QmpClient::Execute(std::string_view command, const json& arguments) {
  return Execute(command, arguments, options_.timeout);
}

Result<std::string> QmpClient::Hmp(std::string_view command_line) {
  CAIRN_ASSIGN_OR_RETURN(
      json r, Execute("human-monitor-command", json{{"command-line", std::string(command_line)}}));
  if (!r.is_string()) {
    return Status::Corruption("QMP: human-monitor-command did not return a string");
  }
  return r.get<std::string>();
}

Result<json> QmpClient::WaitEvent(std::string_view name,
                                  const std::function<bool(const json&)>& predicate,
                                  std::chrono::milliseconds timeout) {
  auto matches = [&](const json& e) {
    auto n = e.find("event");
    if (n == e.end() || !n->is_string() || n->get<std::string>() != name) return false;
    return !predicate || predicate(e);
  };
  for (auto it = events_.begin(); it != events_.end(); ++it) {
    if (matches(*it)) {
      json e = std::move(*it);
      events_.erase(it);
      return e;
    }
  }
  if (!broken_.ok()) return broken_;
  auto deadline = Clock::now() + timeout;
  std::string waiting_for = "event " + std::string(name);
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(json m, NextMessage(deadline, waiting_for.c_str()));
    if (!IsEvent(m)) continue;  // a late answer to a command that timed out
    if (matches(m)) return m;
    QueueEvent(std::move(m));
  }
}

Status QmpClient::Poll() {
  if (!broken_.ok()) return broken_;
  for (;;) {
    Result<json> m = NextMessage(Clock::now(), "input");
    if (!m.ok()) return broken_.ok() ? Status::OK() : broken_;  // timed out = nothing more
    if (IsEvent(*m)) QueueEvent(std::move(m).value());
  }
}

std::vector<json> QmpClient::TakeEvents() {
  std::vector<json> out(std::make_move_iterator(events_.begin()),
                        std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

}  // namespace cairn::client
