#include "client/backup_config.h"

#include <unistd.h>

#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include "storage/env.h"
#include "storage/names.h"

namespace cairn::client {
namespace {

// One section instance ("" = the top of the file) and its keys, in order.
struct Section {
  std::string kind;  // "", "libvirt", "notify", "qemu", "image", "domain"
  int index = 0;     // the how-many-th section of its kind (1-based)
  std::vector<CLI::ConfigItem> items;
};

// Reads one section's keys with checks; the first error wins.
class Reader {
 public:
  Reader(const std::string& file, const Section& section) : section_(section) {
    where_ = file + ": ";
    if (!section.kind.empty()) {
      const bool many = section.kind == "qemu" || section.kind == "image" || section.kind == "domain";
      where_ += many ? "[[" + section.kind + "]] #" + std::to_string(section.index)
                     : "[" + section.kind + "]";
      where_ += ": ";
    }
  }

  // Fails for every key not in `known`.
  void Known(const std::set<std::string>& known) {
    std::set<std::string> seen;
    for (const auto& item : section_.items) {
      if (!known.contains(item.name)) {
        Error("unknown key \"" + item.name + "\"");
      } else if (!seen.insert(item.name).second) {
        Error("\"" + item.name + "\" is given twice");
      }
    }
  }

  const CLI::ConfigItem* Find(const std::string& key) const {
    for (const auto& item : section_.items) {
      if (item.name == key) return &item;
    }
    return nullptr;
  }

  void String(const std::string& key, std::string* out, bool required = false) {
    const CLI::ConfigItem* item = Find(key);
    if (item == nullptr) {
      if (required) Error("\"" + key + "\" is missing");
      return;
    }
    if (item->inputs.size() != 1) {
      Error("\"" + key + "\" wants one value (quote a value with spaces or commas)");
      return;
    }
    if (item->inputs[0].empty()) {
      Error("\"" + key + "\" is empty");
      return;
    }
    *out = item->inputs[0];
  }

  void List(const std::string& key, std::vector<std::string>* out) {
    const CLI::ConfigItem* item = Find(key);
    if (item == nullptr) return;
    for (const auto& v : item->inputs) {
      if (v.empty()) Error("\"" + key + "\" holds an empty value");
    }
    *out = item->inputs;
  }

  void Int(const std::string& key, int min, int max, int* out) {
    std::string text;
    String(key, &text);
    if (text.empty()) return;
    int v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < min || v > max) {
      Error("\"" + key + "\" wants a whole number from " + std::to_string(min) + " to " +
            std::to_string(max) + ", not \"" + text + "\"");
      return;
    }
    *out = v;
  }

  void Number(const std::string& key, std::optional<double>* out) {
    std::string text;
    String(key, &text);
    if (text.empty()) return;
    char* end = nullptr;
    double v = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size() || !(v >= 0) || v > 1e6) {
      Error("\"" + key + "\" wants a number of MB/s (0 = no limit), not \"" + text + "\"");
      return;
    }
    *out = v;
  }

  void Bool(const std::string& key, bool* out) {
    std::string text;
    String(key, &text);
    if (text.empty()) return;
    if (text == "true" || text == "false") {
      *out = text == "true";
    } else {
      Error("\"" + key + "\" wants true or false, not \"" + text + "\"");
    }
  }

  void Id(const std::string& key, std::string* out, bool required) {
    String(key, out, required);
    if (out->empty()) return;
    if (Status s = storage::ValidateName(storage::NameKind::kBackupId, *out); !s.ok()) {
      Error("\"" + key + "\": " + s.message());
    }
  }

  void Overrides(VmOverrides* o, bool quiesce_allowed) {
    List("skip-disks", &o->skip_disks);
    Number("rate-limit", &o->rate_limit_mb);
    Bool("full", &o->full);
    std::string q;
    String("quiesce", &q);
    if (q.empty()) return;
    if (!quiesce_allowed) {
      Error("\"quiesce\" has no meaning here (the VM is not running)");
    } else if (q == "none") {
      o->quiesce = QuiescePolicy::kNone;
    } else if (q == "try") {
      o->quiesce = QuiescePolicy::kTry;
    } else if (q == "require") {
      o->quiesce = QuiescePolicy::kRequire;
    } else {
      Error("\"quiesce\" wants none, try or require, not \"" + q + "\"");
    }
  }

  void Error(const std::string& what) {
    if (status_.ok()) status_ = Status::InvalidArgument(where_ + what);
  }
  const Status& status() const { return status_; }

 private:
  const Section& section_;
  std::string where_;
  Status status_ = Status::OK();
};

// CLI11's items in sections. "[[qemu]]" (TOML's array of tables) and
// "[qemu]" (INI) both start a new instance of a repeatable section; CLI11
// marks the end of each instance with an item named "--".
Result<std::vector<Section>> SplitSections(std::string_view text, const std::string& file) {
  std::istringstream in{std::string(text)};
  CLI::ConfigTOML reader;
  std::vector<CLI::ConfigItem> items;
  try {
    items = reader.from_config(in);
  } catch (const CLI::Error& e) {
    return Status::InvalidArgument(file + ": " + e.what());
  }
  std::vector<Section> sections(1);
  std::map<std::string, int> counts;
  bool open = false;  // sections.back() is a named section still taking keys
  for (auto& item : items) {
    if (item.name == "++") continue;
    if (item.parents.size() > 1) {
      return Status::InvalidArgument(file + ": nested sections or dotted keys are not supported: " +
                                     item.fullname());
    }
    const std::string kind = item.parents.empty() ? "" : item.parents[0];
    if (item.name == "--") {
      if (!open) {
        return Status::InvalidArgument(file + ": an empty [" + kind + "] section");
      }
      open = false;
      continue;
    }
    if (kind.empty()) {
      if (open) {
        return Status::InvalidArgument(file + ": \"" + item.name + "\" after a section");
      }
      sections.front().items.push_back(std::move(item));
      continue;
    }
    if (!open || sections.back().kind != kind) {
      Section s;
      s.kind = kind;
      s.index = ++counts[kind];
      sections.push_back(std::move(s));
      open = true;
    }
    sections.back().items.push_back(std::move(item));
  }
  return sections;
}

Status ReadTop(const Section& s, const std::string& file, BackupConfig* c) {
  Reader r(file, s);
  r.Known({"repository", "token-file", "fingerprint", "jobs", "hook", "hook-timeout", "log-dir",
           "connections", "rate-limit", "encrypt", "keyfile", "passphrase-file", "master-pubkey"});
  r.String("repository", &c->repository);
  r.String("token-file", &c->token_file);
  r.String("fingerprint", &c->fingerprint);
  r.Int("jobs", 1, 64, &c->jobs);
  r.String("hook", &c->hook);
  r.Int("hook-timeout", 1, 86400, &c->hook_timeout);
  r.String("log-dir", &c->log_dir);
  r.Int("connections", 1, 16, &c->connections);
  std::optional<double> rate;
  r.Number("rate-limit", &rate);
  c->rate_limit_mb = rate.value_or(0);
  r.Bool("encrypt", &c->encrypt);
  r.String("keyfile", &c->keyfile);
  r.String("passphrase-file", &c->passphrase_file);
  r.String("master-pubkey", &c->master_pubkey);
  if (r.status().ok() && !c->encrypt &&
      (!c->keyfile.empty() || !c->passphrase_file.empty() || !c->master_pubkey.empty())) {
    r.Error("keyfile, passphrase-file and master-pubkey need encrypt = true");
  }
  return r.status();
}

Status ReadNotify(const Section& s, const std::string& file, BackupConfig* c) {
  Reader r(file, s);
  r.Known({"mail-to", "sendmail", "webhook", "webhook-ca", "when", "timeout"});
  r.String("mail-to", &c->notify.mail_to);
  r.String("sendmail", &c->notify.sendmail);
  r.String("webhook", &c->notify.webhook_url);
  r.String("webhook-ca", &c->notify.webhook_ca_file);
  r.Int("timeout", 1, 600, &c->notify.timeout_seconds);
  std::string when = "always";
  r.String("when", &when);
  if (when != "always" && when != "failure") r.Error("\"when\" wants always or failure");
  c->notify_on_failure_only = when == "failure";
  CAIRN_RETURN_IF_ERROR(r.status());
  if (c->notify.mail_to.empty() && c->notify.webhook_url.empty()) {
    return Status::InvalidArgument(file + ": [notify]: neither mail-to nor webhook is set");
  }
  if (auto n = Notifier::Create(c->notify); !n.ok()) {
    return Status::InvalidArgument(file + ": [notify]: " + n.status().message());
  }
  return Status::OK();
}

Status ReadVmSection(const Section& s, const std::string& file, BackupConfig* c) {
  Reader r(file, s);
  const std::set<std::string> overrides = {"skip-disks", "rate-limit", "full", "quiesce"};
  auto known = [&](std::set<std::string> keys) {
    keys.insert(overrides.begin(), overrides.end());
    r.Known(keys);
  };
  if (s.kind == "qemu") {
    QemuVmEntry e;
    known({"id", "qmp", "guest-agent"});
    r.Id("id", &e.id, true);
    r.String("qmp", &e.qmp, true);
    r.String("guest-agent", &e.guest_agent);
    r.Overrides(&e.overrides, true);
    if (r.status().ok() && e.guest_agent.empty() && e.overrides.quiesce &&
        *e.overrides.quiesce != QuiescePolicy::kNone) {
      r.Error("quiesce needs \"guest-agent\" (the qemu-ga socket)");
    }
    c->qemu.push_back(std::move(e));
  } else if (s.kind == "image") {
    ImageEntry e;
    known({"id", "files"});
    r.Id("id", &e.id, true);
    r.List("files", &e.files);
    if (e.files.empty()) r.Error("\"files\" is missing");
    r.Overrides(&e.overrides, false);
    c->images.push_back(std::move(e));
  } else if (s.kind == "domain") {
    DomainEntry e;
    known({"name", "id"});
    r.String("name", &e.name, true);
    r.Id("id", &e.id, false);
    r.Overrides(&e.overrides, true);
    c->domains.push_back(std::move(e));
  } else if (s.kind == "libvirt") {
    r.Known({"uri", "exclude"});
    if (c->libvirt) r.Error("given twice");
    c->libvirt = true;
    r.String("uri", &c->libvirt_uri);
    r.List("exclude", &c->libvirt_exclude);
  } else if (s.kind == "notify") {
    if (s.index > 1) r.Error("given twice");
    CAIRN_RETURN_IF_ERROR(r.status());
    return ReadNotify(s, file, c);
  } else {
    return Status::InvalidArgument(file + ": unknown section [" + s.kind +
                                   "] (known: libvirt, notify, qemu, image, domain)");
  }
  return r.status();
}

// What no single section can check: ids unique, domains only with [libvirt].
Status CheckWhole(const std::string& file, const BackupConfig& c) {
  std::set<std::string> ids;
  auto add = [&](const std::string& id, const std::string& what) -> Status {
    if (id.empty() || ids.insert(id).second) return Status::OK();
    return Status::InvalidArgument(file + ": two VMs back up into the group vm/" + id + " (" +
                                   what + ")");
  };
  for (const auto& e : c.qemu) CAIRN_RETURN_IF_ERROR(add(e.id, "[[qemu]] id " + e.id));
  for (const auto& e : c.images) CAIRN_RETURN_IF_ERROR(add(e.id, "[[image]] id " + e.id));
  std::set<std::string> names;
  for (const auto& e : c.domains) {
    if (!c.libvirt) {
      return Status::InvalidArgument(file + ": [[domain]] " + e.name +
                                     " needs a [libvirt] section (which domains to back up)");
    }
    if (!names.insert(e.name).second) {
      return Status::InvalidArgument(file + ": [[domain]] " + e.name + " is given twice");
    }
    for (const auto& x : c.libvirt_exclude) {
      if (x == e.name) {
        return Status::InvalidArgument(file + ": domain " + e.name +
                                       " is both excluded and configured in [[domain]]");
      }
    }
    CAIRN_RETURN_IF_ERROR(add(e.id, "[[domain]] " + e.name + " id " + e.id));
  }
  if (!c.libvirt && c.qemu.empty() && c.images.empty()) {
    return Status::InvalidArgument(file + ": no VM to back up (no [libvirt], [[qemu]] or [[image]])");
  }
  return Status::OK();
}

}  // namespace

Result<BackupConfig> ParseBackupConfig(std::string_view text, const std::string& name) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<Section> sections, SplitSections(text, name));
  BackupConfig c;
  c.path = name;
  CAIRN_RETURN_IF_ERROR(ReadTop(sections.front(), name, &c));
  for (size_t i = 1; i < sections.size(); ++i) {
    CAIRN_RETURN_IF_ERROR(ReadVmSection(sections[i], name, &c));
  }
  CAIRN_RETURN_IF_ERROR(CheckWhole(name, c));
  return c;
}

Result<BackupConfig> LoadBackupConfig(const std::string& path) {
  std::string text;
  Status s = storage::Env::Default()->ReadFile(path, &text, 1 << 20);
  if (!s.ok()) return s.WithContext("config file " + path);
  return ParseBackupConfig(text, path);
}

std::string DefaultBackupLogDir() {
  if (::geteuid() == 0) return "/var/log/cairn";
  const char* state = std::getenv("XDG_STATE_HOME");
  if (state != nullptr && state[0] == '/') return std::string(state) + "/cairn";
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr && home[0] == '/' ? home : "/tmp") + "/.local/state/cairn";
}

}  // namespace cairn::client
