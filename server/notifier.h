#pragma once

// Notifications the server sends on its own: today, "a backup did not
// arrive" (server/overdue.h). The sending itself (HTTPS webhook, local
// sendmail) is shared with `cairn backup all` and lives in the client
// library: client/notify_send.h. A channel that fails is logged by the
// caller; the notification counts as not sent, so it is tried again on the
// next check.

#include "client/notify_send.h"

namespace cairn::server {

using storage::Result;
using storage::Status;
using client::Notification;
using client::Notifier;
using client::NotifierOptions;
using client::ParseWebhookUrl;
using client::WebhookUrl;

}  // namespace cairn::server
