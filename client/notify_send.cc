#include "client/notify_send.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include <chrono>
#include <regex>
#include <thread>

#include "storage/sigpipe_block.h"

namespace cairn::client {
namespace {

bool HasControl(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// One line of a mail header: control characters become spaces.
std::string HeaderText(std::string s) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return s;
}

// Writes all of `data` to `fd`; false on an error.
bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

Result<WebhookUrl> ParseWebhookUrl(const std::string& url) {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("webhook URL " + url + ": " + why);
  };
  constexpr std::string_view kScheme = "https://";
  if (HasControl(url) || url.find_first_of(" #@") != std::string::npos) {
    return bad("spaces, '#', '@' and control characters are not allowed");
  }
  if (url.rfind(kScheme, 0) != 0) return bad("must start with https://");
  std::string rest = url.substr(kScheme.size());
  WebhookUrl out;
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.path = rest.substr(slash);
  size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']') == std::string::npos) {
    std::string port = authority.substr(colon + 1);
    authority.resize(colon);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos) {
      return bad("bad port");
    }
    out.port = std::stoi(port);
    if (out.port < 1 || out.port > 65535) return bad("bad port");
  }
  static const std::regex host_re(R"([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\])");
  if (!std::regex_match(authority, host_re)) return bad("bad host");
  out.host = authority;
  return out;
}

Status ValidateMailAddress(const std::string& address) {
  static const std::regex re(R"([A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253})");
  if (std::regex_match(address, re)) return Status::OK();
  return Status::InvalidArgument("not a mail address: " + address);
}

Result<Notifier> Notifier::Create(NotifierOptions options) {
  Notifier n(std::move(options));
  if (!n.options_.webhook_url.empty()) {
    CAIRN_ASSIGN_OR_RETURN(WebhookUrl url, ParseWebhookUrl(n.options_.webhook_url));
    n.webhook_ = url;
  }
  if (!n.options_.mail_to.empty()) CAIRN_RETURN_IF_ERROR(ValidateMailAddress(n.options_.mail_to));
  return n;
}

Status Notifier::Send(const Notification& n) const {
  Status first = Status::OK();
  if (webhook_) first = PostWebhook(n);
  if (!options_.mail_to.empty()) {
    Status s = SendMail(n);
    if (first.ok()) first = s;
  }
  return first;
}

Status Notifier::PostWebhook(const Notification& n) const {
  auto where = [&] { return "webhook " + webhook_->host + ":" + std::to_string(webhook_->port); };
  httplib::SSLClient client(webhook_->host, webhook_->port);
  client.enable_server_certificate_verification(true);
  if (!options_.webhook_ca_file.empty()) client.set_ca_cert_path(options_.webhook_ca_file);
  client.set_connection_timeout(options_.timeout_seconds, 0);
  client.set_read_timeout(options_.timeout_seconds, 0);
  client.set_write_timeout(options_.timeout_seconds, 0);
  const nlohmann::json body = {{"event", n.event},
                               {"subject", n.subject},
                               {"text", n.text},
                               {"data", n.data},
                               {"time", static_cast<int64_t>(std::time(nullptr))}};
  httplib::Headers headers = {{"User-Agent", options_.user_agent}};
  auto res = client.Post(webhook_->path, headers, body.dump(), "application/json");
  if (!res) {
    return Status::IOError(where() + ": " + httplib::to_string(res.error()));
  }
  if (res->status < 200 || res->status > 299) {
    return Status::IOError(where() + " answered " + std::to_string(res->status));
  }
  return Status::OK();
}

Status Notifier::SendMail(const Notification& n) const {
  const std::string message = "To: " + options_.mail_to + "\nSubject: " + HeaderText(n.subject) +
                              "\nContent-Type: text/plain; charset=utf-8\nAuto-Submitted: "
                              "auto-generated\n\n" +
                              n.text + "\n";
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::IOError("sendmail: pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return Status::IOError("sendmail: fork failed");
  }
  if (pid == 0) {
    ::dup2(fds[0], 0);
    const char* argv[] = {options_.sendmail.c_str(), "-t", "-oi", nullptr};
    ::execv(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(fds[0]);
  // A sendmail that exits early must not kill the process with SIGPIPE (the
  // server ignores it, a test or another caller may not): a failed write is
  // an error.
  bool written = false;
  {
    storage::SigpipeBlock no_sigpipe;
    written = WriteAll(fds[1], message);
  }
  ::close(fds[1]);
  int status = 0;
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(options_.timeout_seconds);
  pid_t done = 0;
  while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return Status::IOError("sendmail did not finish in time");
  }
  if (!written || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::IOError(options_.sendmail + " failed (exit status " +
                           std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")");
  }
  return Status::OK();
}

}  // namespace cairn::client
