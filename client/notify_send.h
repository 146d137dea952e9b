#pragma once

// Sending a notification by mail and/or an HTTPS webhook. Used by the
// server for overdue backups (server/overdue.h, through server/notifier.h)
// and by `cairn backup all` for its report (client/host_backup.h). Two
// channels, each optional:
//   - an HTTPS webhook: POST of the notification as JSON
//     {"event","subject","text","data","time"}, the peer's certificate
//     checked against a CA file (or the system's CAs);
//   - mail through the local sendmail (`sendmail -t -oi`), plain text, the
//     subject's control characters replaced (no header injection).
// A channel that fails makes Send return its error; the caller decides
// whether to retry (the server does at its next check) or to report it.
//
// Thread safety: Send may be called from any thread; a Notifier holds no
// mutable state.

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "storage/status.h"

namespace cairn::client {

using storage::Result;
using storage::Status;

struct NotifierOptions {
  std::string webhook_url;      // "https://host[:port]/path"; empty: no webhook
  std::string webhook_ca_file;  // PEM CAs for the webhook's certificate; empty: system CAs
  std::string mail_to;          // an address; empty: no mail
  std::string sendmail = "/usr/sbin/sendmail";
  int timeout_seconds = 10;
  std::string user_agent = "cairn";  // the webhook request's User-Agent
};

struct Notification {
  std::string event;    // e.g. "backup-overdue", "backup-job"
  std::string subject;  // one line
  std::string text;     // the mail body
  nlohmann::json data = nlohmann::json::object();  // the webhook's "data"
};

struct WebhookUrl {
  std::string host;
  int port = 443;
  std::string path = "/";
};
// InvalidArgument unless `url` is https:// with a host, an optional port and
// an optional path (no user info, no fragment, no control characters).
Result<WebhookUrl> ParseWebhookUrl(const std::string& url);

// InvalidArgument unless `address` is one plain mail address (no name, no
// list, nothing a mail header could be injected with).
Status ValidateMailAddress(const std::string& address);

class Notifier {
 public:
  // InvalidArgument for a bad webhook URL or mail address.
  static Result<Notifier> Create(NotifierOptions options);

  bool enabled() const { return webhook_ || !options_.mail_to.empty(); }
  // Sends on every configured channel; the first failure (the other
  // channels are still tried).
  Status Send(const Notification& n) const;

 private:
  explicit Notifier(NotifierOptions options) : options_(std::move(options)) {}
  Status PostWebhook(const Notification& n) const;
  Status SendMail(const Notification& n) const;

  NotifierOptions options_;
  std::optional<WebhookUrl> webhook_;
};

}  // namespace cairn::client
