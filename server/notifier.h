#pragma once

// Notifications the server sends on its own: today, "a backup did not
// arrive" (server/overdue.h). Two channels, each optional:
//   - an HTTPS webhook: POST of the notification as JSON, the server's
//     certificate checked against a CA file (or the system's CAs);
//   - mail through the local sendmail (`sendmail -t -oi`), plain text.
// A channel that fails is logged by the caller; the notification counts as
// not sent, so it is tried again on the next check.
//
// Thread safety: Send may be called from any thread; the Notifier holds no
// mutable state.

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "storage/status.h"

namespace cairn::server {

using storage::Result;
using storage::Status;

struct NotifierOptions {
  std::string webhook_url;      // "https://host[:port]/path"; empty: no webhook
  std::string webhook_ca_file;  // PEM CAs for the webhook's certificate; empty: system CAs
  std::string mail_to;          // an address; empty: no mail
  std::string sendmail = "/usr/sbin/sendmail";
  int timeout_seconds = 10;
};

struct Notification {
  std::string event;    // e.g. "backup-overdue"
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

}  // namespace cairn::server
