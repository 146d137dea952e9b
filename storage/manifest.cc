#include "storage/manifest.h"

#include <algorithm>
#include <limits>
#include <set>

#include "storage/json_bounds.h"
#include "storage/names.h"

namespace cairn::storage {
namespace {

using json = nlohmann::json;

// Deep nesting is no use to anyone and would make dump() recurse deeply.
constexpr size_t kMaxJsonDepth = 32;
// 9999-12-31T23:59:59Z: the last time a snapshot folder can be named for.
constexpr int64_t kMaxBackupTime = 253402300799;

constexpr const char* kTopKeys[] = {"backup-type", "backup-id",        "backup-time",
                                    "archives",    "client",           "crypt",
                                    "protected-sha256", "unprotected"};
constexpr const char* kCryptKeys[] = {"mode", "fingerprint", "signature"};
constexpr const char* kArchiveKeys[] = {"name", "size", "csum"};
constexpr const char* kUnprotectedKeys[] = {"verify-state", "notes", "protected"};
constexpr const char* kVerifyKeys[] = {"state", "time", "task"};

Status Bad(std::string_view why) { return Status::Corruption("manifest: " + std::string(why)); }

// invalid UTF-8 in a string (which only code, never Parse, can put there)
// becomes U+FFFD instead of an exception; the same rule applies to the
// checksum and to the file, so they always agree.
std::string Dump(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

json ProtectedPart(const Manifest& m) {
  json archives = json::array();
  for (const ArchiveInfo& a : m.archives) {
    json e = json::object();
    e["name"] = a.name;
    e["size"] = a.size;
    e["csum"] = a.csum.ToHex();
    archives.push_back(std::move(e));
  }
  json p = json::object();
  p["backup-type"] = m.backup_type;
  p["backup-id"] = m.backup_id;
  p["backup-time"] = m.backup_time;
  p["archives"] = std::move(archives);
  p["client"] = m.client;
  // Absent for plain snapshots, so their checksum is what it always was.
  if (m.crypt.has_value()) {
    json c = json::object();
    c["mode"] = "encrypt";
    c["fingerprint"] = m.crypt->fingerprint;
    c["signature"] = m.crypt->signature;
    p["crypt"] = std::move(c);
  }
  return p;
}

// nlohmann's default object is a std::map, so dump() sorts keys bytewise and
// writes no whitespace: that is the canonical form.
Digest ProtectedChecksum(const json& protected_part) { return Sha256(Dump(protected_part, -1)); }

template <size_t N>
Status CheckKeys(const json& obj, const char* const (&allowed)[N], std::string_view where) {
  for (const auto& item : obj.items()) {
    bool known = false;
    for (const char* k : allowed) known |= item.key() == k;
    if (!known) return Bad("unknown key in " + std::string(where));
  }
  return Status::OK();
}

const json* Find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

Result<std::string> GetString(const json& obj, const char* key) {
  const json* v = Find(obj, key);
  if (v == nullptr || !v->is_string()) return Bad(std::string(key) + " must be a string");
  return v->get_ref<const std::string&>();
}

Result<int64_t> GetInt64(const json& obj, const char* key) {
  const json* v = Find(obj, key);
  if (v != nullptr && v->is_number_integer()) {
    if (v->is_number_unsigned()) {
      uint64_t u = v->get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return static_cast<int64_t>(u);
      }
    } else {
      return v->get<int64_t>();
    }
  }
  return Bad(std::string(key) + " must be a 64-bit signed integer");
}

Result<uint64_t> GetUint64(const json& obj, const char* key) {
  const json* v = Find(obj, key);
  if (v == nullptr || !v->is_number_unsigned()) {
    return Bad(std::string(key) + " must be a non-negative integer");
  }
  return v->get<uint64_t>();
}

Result<Digest> GetDigest(const json& obj, const char* key) {
  CAIRN_ASSIGN_OR_RETURN(std::string hex, GetString(obj, key));
  auto d = Digest::FromHex(hex);
  if (!d.ok()) return Bad(std::string(key) + " must be 64 lowercase hex digits");
  return *d;
}

Status CheckName(NameKind kind, const std::string& name) {
  Status s = ValidateName(kind, name);
  return s.ok() ? s : Bad(s.message());
}

Result<json> ParseJson(std::string_view text) {
  // Duplicate keys are refused: JSON parsers disagree on which one wins, and
  // the checksum must cover exactly what every reader sees.
  std::vector<std::set<std::string>> open_objects;
  bool duplicate = false;
  json::parser_callback_t cb = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::key:
        if (const auto* k = parsed.get_ptr<const std::string*>();
            k != nullptr && !open_objects.empty() && !open_objects.back().insert(*k).second) {
          duplicate = true;
        }
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  // Depth is refused on the raw bytes, before a value is built: copying or
  // dumping a deeply nested value recurses (storage/json_bounds.h).
  if (JsonDepth(text) > kMaxJsonDepth) {
    return Bad("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  auto j = ParseJsonBounded(text, JsonLimits{kMaxJsonDepth, kMaxManifestSize}, cb);
  if (!j.ok()) return Bad("not valid JSON");
  if (duplicate) return Bad("duplicate key");
  return std::move(j).value();
}

bool IsLowerHex(std::string_view text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Result<CryptInfo> ParseCrypt(const json& c) {
  if (!c.is_object()) return Bad("crypt must be an object");
  CAIRN_RETURN_IF_ERROR(CheckKeys(c, kCryptKeys, "crypt"));
  CAIRN_ASSIGN_OR_RETURN(std::string mode, GetString(c, "mode"));
  if (mode != "encrypt") return Bad("crypt.mode must be \"encrypt\"");
  CryptInfo info;
  CAIRN_ASSIGN_OR_RETURN(info.fingerprint, GetString(c, "fingerprint"));
  if (!IsKeyFingerprint(info.fingerprint)) {
    return Bad("crypt.fingerprint must be 8 lowercase hex pairs joined by ':'");
  }
  CAIRN_ASSIGN_OR_RETURN(info.signature, GetString(c, "signature"));
  if (!info.signature.empty() && (info.signature.size() != 64 || !IsLowerHex(info.signature))) {
    return Bad("crypt.signature must be 64 lowercase hex digits or empty");
  }
  return info;
}

}  // namespace

bool IsKeyFingerprint(std::string_view text) {
  if (text.size() != 23) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (i % 3 == 2) {
      if (text[i] != ':') return false;
    } else if (!IsLowerHex(text.substr(i, 1))) {
      return false;
    }
  }
  return true;
}

bool Manifest::AllowsChunkKind(BlobKind kind) const {
  const bool encrypted_kind = kind == BlobKind::kEncrypted || kind == BlobKind::kEncryptedZstd;
  return encrypted_kind == crypt.has_value();
}

std::string ManifestSigningText(const Manifest& m) {
  std::vector<const ArchiveInfo*> sorted;
  for (const ArchiveInfo& a : m.archives) sorted.push_back(&a);
  std::sort(sorted.begin(), sorted.end(),
            [](const ArchiveInfo* a, const ArchiveInfo* b) { return a->name < b->name; });
  std::string text = "cairn-manifest-v1\n";
  text += m.backup_type + "/" + m.backup_id + "/" + std::to_string(m.backup_time) + "\n";
  text += "fingerprint " + (m.crypt.has_value() ? m.crypt->fingerprint : std::string()) + "\n";
  for (const ArchiveInfo* a : sorted) {
    text += a->name + " " + std::to_string(a->size) + " " + a->csum.ToHex() + "\n";
  }
  return text;
}

uint64_t Manifest::TotalSize() const {
  uint64_t total = 0;
  for (const ArchiveInfo& a : archives) {
    // Saturate: sizes come from a file, and a wrapped sum would lie.
    total = a.size > std::numeric_limits<uint64_t>::max() - total
                ? std::numeric_limits<uint64_t>::max()
                : total + a.size;
  }
  return total;
}

const ArchiveInfo* Manifest::FindArchive(std::string_view name) const {
  for (const ArchiveInfo& a : archives) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

std::string Manifest::ToJson() const {
  json j = ProtectedPart(*this);
  j["protected-sha256"] = ProtectedChecksum(j).ToHex();
  json unprotected = json::object();
  if (verify.has_value()) {
    json v = json::object();
    v["state"] = verify->state;
    v["time"] = verify->time;
    v["task"] = verify->task;
    unprotected["verify-state"] = std::move(v);
  }
  unprotected["notes"] = notes;
  unprotected["protected"] = is_protected;
  j["unprotected"] = std::move(unprotected);
  return Dump(j, 2) + "\n";
}

Result<Manifest> Manifest::Parse(std::string_view text) {
  if (text.size() > kMaxManifestSize) {
    return Bad("larger than " + std::to_string(kMaxManifestSize) + " bytes");
  }
  // nlohmann skips a UTF-8 byte order mark; the format has none, and one
  // spelling per manifest keeps other readers in step.
  if (text.starts_with("\xef\xbb\xbf")) return Bad("starts with a byte order mark");
  CAIRN_ASSIGN_OR_RETURN(json j, ParseJson(text));
  if (!j.is_object()) return Bad("top level must be an object");
  CAIRN_RETURN_IF_ERROR(CheckKeys(j, kTopKeys, "top level"));

  Manifest m;
  CAIRN_ASSIGN_OR_RETURN(m.backup_type, GetString(j, "backup-type"));
  CAIRN_RETURN_IF_ERROR(CheckName(NameKind::kBackupType, m.backup_type));
  CAIRN_ASSIGN_OR_RETURN(m.backup_id, GetString(j, "backup-id"));
  CAIRN_RETURN_IF_ERROR(CheckName(NameKind::kBackupId, m.backup_id));
  CAIRN_ASSIGN_OR_RETURN(m.backup_time, GetInt64(j, "backup-time"));
  if (m.backup_time < 0 || m.backup_time > kMaxBackupTime) {
    return Bad("backup-time outside 1970..9999");
  }

  const json* archives = Find(j, "archives");
  if (archives == nullptr || !archives->is_array()) return Bad("archives must be an array");
  std::set<std::string> seen;
  for (const json& e : *archives) {
    if (!e.is_object()) return Bad("archive entry must be an object");
    CAIRN_RETURN_IF_ERROR(CheckKeys(e, kArchiveKeys, "archive entry"));
    ArchiveInfo a;
    CAIRN_ASSIGN_OR_RETURN(a.name, GetString(e, "name"));
    CAIRN_RETURN_IF_ERROR(CheckName(NameKind::kArchive, a.name));
    if (!seen.insert(a.name).second) return Bad("archive " + a.name + " listed twice");
    CAIRN_ASSIGN_OR_RETURN(a.size, GetUint64(e, "size"));
    CAIRN_ASSIGN_OR_RETURN(a.csum, GetDigest(e, "csum"));
    m.archives.push_back(std::move(a));
  }

  const json* client = Find(j, "client");
  if (client == nullptr || !client->is_object()) return Bad("client must be an object");
  m.client = *client;
  if (const json* c = Find(j, "crypt"); c != nullptr) {
    CAIRN_ASSIGN_OR_RETURN(CryptInfo info, ParseCrypt(*c));
    m.crypt = std::move(info);
  }

  CAIRN_ASSIGN_OR_RETURN(Digest stored, GetDigest(j, "protected-sha256"));
  json protected_part = json::object();
  for (const char* key : {"backup-type", "backup-id", "backup-time", "archives", "client", "crypt"}) {
    if (j.contains(key)) protected_part[key] = j[key];
  }
  if (ProtectedChecksum(protected_part) != stored) {
    return Bad("protected-sha256 does not match the protected part");
  }

  const json* unprotected = Find(j, "unprotected");
  if (unprotected == nullptr || !unprotected->is_object()) {
    return Bad("unprotected must be an object");
  }
  CAIRN_RETURN_IF_ERROR(CheckKeys(*unprotected, kUnprotectedKeys, "unprotected"));
  if (const json* v = Find(*unprotected, "verify-state"); v != nullptr) {
    if (!v->is_object()) return Bad("verify-state must be an object");
    CAIRN_RETURN_IF_ERROR(CheckKeys(*v, kVerifyKeys, "verify-state"));
    VerifyState vs;
    CAIRN_ASSIGN_OR_RETURN(vs.state, GetString(*v, "state"));
    if (vs.state != "ok" && vs.state != "failed") {
      return Bad("verify-state.state must be \"ok\" or \"failed\"");
    }
    CAIRN_ASSIGN_OR_RETURN(vs.time, GetInt64(*v, "time"));
    CAIRN_ASSIGN_OR_RETURN(vs.task, GetString(*v, "task"));
    m.verify = std::move(vs);
  }
  CAIRN_ASSIGN_OR_RETURN(m.notes, GetString(*unprotected, "notes"));
  const json* prot = Find(*unprotected, "protected");
  if (prot == nullptr || !prot->is_boolean()) return Bad("protected must be true or false");
  m.is_protected = prot->get<bool>();
  return m;
}

}  // namespace cairn::storage
