#include "storage/status.h"

#include <cerrno>
#include <cstring>

namespace cairn::storage {

Status Status::FromErrno(std::string_view context, int err) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  if (err == ENOENT) return NotFound(msg);
  if (err == EEXIST) return AlreadyExists(msg);
  if (err == EACCES || err == EPERM) return PermissionDenied(msg);
  return IOError(msg);
}

const char* Status::CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kNotFound: return "NotFound";
    case Code::kCorruption: return "Corruption";
    case Code::kIOError: return "IOError";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kPermissionDenied: return "PermissionDenied";
    case Code::kConflict: return "Conflict";
    case Code::kAlreadyExists: return "AlreadyExists";
    case Code::kBusy: return "Busy";
    case Code::kUnauthenticated: return "Unauthenticated";
    case Code::kTooManyRequests: return "TooManyRequests";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(code_);
  s += ": ";
  s += message_;
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, msg);
}

}  // namespace cairn::storage
