#include "client/qmp_client.h"

#include <unistd.h>

#include <algorithm>
#include <thread>
#include <utility>

#include "client/unix_socket.h"

namespace cairn::client {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Deeper nesting than this is not QMP; it would only make the JSON parser and
// the destructor of the parsed value recurse.

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
  if (!IsUnixSocketPath(socket_path)) {
    return Status::InvalidArgument("QMP socket path empty or too long for a unix socket: " +
                                   socket_path);
  }
  const auto start = Clock::now();
  const auto connect_until = start + options.connect_wait;
  // A full backlog (QEMU serves one monitor client; others queue) is waited
  // out for up to the timeout, where a blocking connect would wait forever.
  const auto backlog_until = std::max(connect_until, start + options.timeout);
  Result<int> fd = ConnectUnixSocket(socket_path, backlog_until);
  while (!fd.ok() && Clock::now() < connect_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    fd = ConnectUnixSocket(socket_path, backlog_until);
  }
  if (!fd.ok()) return fd.status();
  std::unique_ptr<QmpClient> client(new QmpClient(*fd, options));

  auto deadline = Clock::now() + options.timeout;
  CAIRN_ASSIGN_OR_RETURN(json greeting, client->NextMessage(deadline, "the QMP greeting"));
  // QEMU may put an event (RESUME, …) on the socket before the greeting when
  // the monitor comes up while the guest changes state; it is kept for
  // WaitEvent like any other.
  while (IsEvent(greeting)) {
    client->QueueEvent(std::move(greeting));
    CAIRN_ASSIGN_OR_RETURN(greeting, client->NextMessage(deadline, "the QMP greeting"));
  }
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
  Result<SocketEnd> end = SocketSendAll(fd_, data, deadline);
  if (!end.ok()) return Fail(end.status().WithContext("QMP"));
  if (*end != SocketEnd::kDone) return Fail(Status::IOError("QMP: timed out sending a command"));
  return Status::OK();
}

Status QmpClient::ReadSome(Clock::time_point deadline, bool* timed_out) {
  *timed_out = false;
  char buf[65536];
  size_t n = 0;
  Result<SocketEnd> end = SocketRecvSome(fd_, buf, sizeof(buf), &n, deadline);
  if (!end.ok()) return Fail(end.status().WithContext("QMP"));
  switch (*end) {
    case SocketEnd::kDone:
      splitter_.Append(buf, n);
      return Status::OK();
    case SocketEnd::kClosed:
      return Fail(Status::IOError("QMP: connection closed by QEMU"));
    case SocketEnd::kTimedOut:
    case SocketEnd::kWoken:
      break;
  }
  *timed_out = true;
  return Status::OK();
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
