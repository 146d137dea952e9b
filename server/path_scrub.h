#pragma once

// Server paths must never reach a client (issue 17): error messages and task
// logs name snapshots, archives, digests and tasks, not files. This is the
// safety net under that rule.
//
// Thread safety: both functions may be called from any thread.

#include <string>

namespace cairn::server {

// Registers a folder whose path (as given and resolved) ScrubPaths replaces
// by "<server>": the data folder and every datastore folder.
void AddServerPath(const std::string& path);

// `text` with every registered server folder replaced by "<server>", and any
// other absolute path (a token starting with '/' after the start, a space, a
// quote, '(', '=' or ',') by "<path>".
std::string ScrubPaths(std::string text);

}  // namespace cairn::server
