#pragma once

// StorageDaemon: qemu-storage-daemon (Debian's qemu-system-common) on the
// image files of a shut-off VM, so that `cairn backup image` takes exactly
// the path of a running VM (QMP, dirty bitmaps, drive-backup into the NBD
// sink) and offline backups are incremental too (DESIGN.md §4). Persistent
// bitmaps are stored in the qcow2 files when the daemon quits.
//
// Each file becomes one format node named after the file's base name
// ("web-01.qcow2" → node "web-01.qcow2"; characters outside [A-Za-z0-9._-]
// become '_', and a name not starting with a letter gets "img-" in front).
// The format is probed with `qemu-img info`. A file in use by a running QEMU
// is refused by QEMU's image locking: the error says so.
//
// Ownership: the daemon runs in its own temporary directory (QMP socket and
// log) and is stopped (QMP quit, then SIGKILL after a timeout) by Stop() or
// the destructor.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "storage/status.h"

namespace cairn::client {

using storage::Result;
using storage::Status;

class StorageDaemon {
 public:
  struct Image {
    std::string path;    // absolute
    std::string node;    // node name (also the archive's base name)
    std::string format;  // "qcow2", "raw", ...
  };

  // Starts the daemon on `files` and waits until its QMP socket answers.
  static Result<std::unique_ptr<StorageDaemon>> Start(const std::vector<std::string>& files);
  ~StorageDaemon();
  StorageDaemon(const StorageDaemon&) = delete;
  StorageDaemon& operator=(const StorageDaemon&) = delete;

  const std::string& qmp_socket() const { return qmp_socket_; }
  const std::vector<Image>& images() const { return images_; }

  // Asks the daemon to quit (it flushes the images and writes persistent
  // bitmaps) and waits for it. Idempotent.
  Status Stop();

 private:
  StorageDaemon() = default;
  std::string Log() const;

  pid_t pid_ = -1;
  std::string dir_;
  std::string qmp_socket_;
  std::vector<Image> images_;
};

// The node / archive name for an image file's base name (see above).
std::string ImageNodeName(const std::string& path);

}  // namespace cairn::client
