#pragma once

// Single files from a disk archive (`cairn files`, client/MAP.md "Single
// files"): the archive is served by an in-process NbdExport on a private
// unix socket, `nbdfuse` (libnbd-bin) shows the export as one read-only
// file in a private FUSE mount, and e2fsprogs' `debugfs` (opened read-only,
// in user space, no root and no kernel file system driver involved) lists
// and copies files of the ext2/3/4 file system in it. A partition table is
// read with `sfdisk --json` (util-linux); debugfs then opens the partition
// through its `?offset=` I/O option. Nothing of a file system is parsed
// here — only the tools' output.
//
// Why not the kernel (loop mount) or libguestfs: a loop mount needs root
// and lets the host kernel's file system driver parse a guest's (possibly
// damaged or hostile) disk; libguestfs needs an appliance kernel, which
// this host does not have. Other file systems (xfs, vfat, ntfs) would go
// the same way with their user-space tools (xfs_db, mtools, ntfs-3g's
// ntfsls/ntfscat); they are not wired in yet: InvalidArgument names what
// was found.
//
// Not thread-safe. The destructor unmounts, stops the export and ends the
// reader session.

#include <memory>
#include <string>
#include <vector>

#include "client/api_client.h"
#include "client/archive_source.h"
#include "storage/status.h"

namespace cairn::client {

struct FileEntry {
  std::string name;
  uint32_t mode = 0;  // st_mode bits as the file system stores them
  uint64_t size = 0;
  uint64_t inode = 0;
  bool is_dir() const { return (mode & 0170000) == 0040000; }
};

struct ArchiveFilesOptions {
  ArchiveSourceOptions source;
  // 0 = the whole disk holds the file system, or the only/first Linux
  // partition that does; N = partition N (1-based, as sfdisk numbers them).
  int partition = 0;
};

class ArchiveFiles {
 public:
  // Opens the archive and mounts it; finds the file system. IOError when
  // nbdfuse, fusermount3, debugfs or sfdisk are missing or fail.
  static Result<std::unique_ptr<ArchiveFiles>> Open(const Repository& repo,
                                                    const std::string& snapshot,
                                                    const std::string& archive,
                                                    const ArchiveFilesOptions& options);
  ~ArchiveFiles();
  ArchiveFiles(const ArchiveFiles&) = delete;
  ArchiveFiles& operator=(const ArchiveFiles&) = delete;

  // The entries of directory `path` ("/" is the root), "." and ".." left
  // out, sorted by name. NotFound for a path that is not there;
  // InvalidArgument for one that is not a directory.
  Result<std::vector<FileEntry>> List(const std::string& path);
  // Copies the regular file `path` to `dest` (a new file, written under a
  // temporary name and renamed; mode and times as stored), or a directory
  // recursively into the new directory `dest`.
  Status Get(const std::string& path, const std::string& dest);

  const std::string& snapshot() const;
  // "ext4 on partition 1 at offset 1048576" and the like.
  const std::string& description() const { return description_; }

  class Impl;

 private:
  explicit ArchiveFiles(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string description_;
};

}  // namespace cairn::client
