#include "client/archive_files.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "client/nbd_export.h"
#include "client/subprocess.h"

namespace cairn::client {
namespace {

constexpr auto kMountWait = std::chrono::seconds(20);
constexpr auto kToolTimeout = std::chrono::minutes(30);

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct SplitRun {
  int exit_code = -1;
  std::string out, err;
};

// Runs argv with stdout and stderr kept apart (debugfs reports its errors
// only on stderr and exits 0), each into a file under `dir`.
Result<SplitRun> RunSplit(const std::vector<std::string>& argv, const std::string& dir) {
  const std::string out_path = dir + "/tool.out", err_path = dir + "/tool.err";
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0 || err < 0) {
    if (out >= 0) ::close(out);
    if (err >= 0) ::close(err);
    return Status::IOError("cannot create " + out_path);
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(out);
  ::close(err);
  if (pid < 0) return Status::IOError("fork: " + std::string(std::strerror(errno)));
  const auto deadline = std::chrono::steady_clock::now() + kToolTimeout;
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return Status::IOError(argv[0] + " timed out");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  SplitRun run;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (run.exit_code == 127) {
    return Status::IOError(argv[0] + " could not be run (Debian: " +
                           (argv[0] == "debugfs" ? "e2fsprogs" : "util-linux") + ")");
  }
  run.out = ReadAll(out_path);
  run.err = ReadAll(err_path);
  return run;
}

// debugfs's stderr without its version banner.
std::string DebugfsErrors(const std::string& err) {
  std::string out;
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("debugfs ") && line.find('(') != std::string::npos) continue;
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    out += (out.empty() ? "" : "; ") + line;
  }
  return out;
}

// A path as one debugfs argument (its parser honours double quotes).
Result<std::string> Quoted(const std::string& path) {
  if (path.find_first_of("\"\n\r") != std::string::npos || path.empty()) {
    return Status::InvalidArgument("path not supported (empty, or holds a quote or newline): " +
                                   path);
  }
  return "\"" + path + "\"";
}

}  // namespace

class ArchiveFiles::Impl {
 public:
  ~Impl() { Close(); }

  Status Open(const Repository& repo, const std::string& snapshot, const std::string& archive,
              const ArchiveFilesOptions& options, std::string* description) {
    char tmpl[] = "/tmp/cairn-files-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return Status::IOError("mkdtemp: " + std::string(std::strerror(errno)));
    dir_ = tmpl;
    CAIRN_ASSIGN_OR_RETURN(source_, ArchiveSource::Open(repo, snapshot, archive, options.source));
    NbdExportOptions eo;
    eo.socket_path = dir_ + "/nbd.sock";
    CAIRN_ASSIGN_OR_RETURN(export_, NbdExport::Start(eo, source_.get()));
    const std::string mnt = dir_ + "/mnt";
    if (::mkdir(mnt.c_str(), 0700) != 0) return Status::IOError("mkdir " + mnt);
    device_ = mnt + "/disk";
    CAIRN_ASSIGN_OR_RETURN(
        fuse_pid_, StartProcess({"nbdfuse", "-r", device_, "--unix", eo.socket_path},
                                dir_ + "/nbdfuse.log"));
    mounted_ = true;
    CAIRN_RETURN_IF_ERROR(WaitForMount());
    return FindFileSystem(options.partition, description);
  }

  void Close() {
    if (mounted_) {
      (void)RunProcess({"fusermount3", "-u", dir_ + "/mnt"}, std::chrono::seconds(30));
      mounted_ = false;
    }
    if (fuse_pid_ > 0) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      int status = 0;
      while (::waitpid(fuse_pid_, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          ::kill(fuse_pid_, SIGKILL);
          ::waitpid(fuse_pid_, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      fuse_pid_ = -1;
    }
    if (export_ != nullptr) export_->Stop();
    export_.reset();
    if (source_ != nullptr) source_->Close();
    source_.reset();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      dir_.clear();
    }
  }

  Result<std::vector<FileEntry>> List(const std::string& path) {
    CAIRN_ASSIGN_OR_RETURN(std::string q, Quoted(path));
    CAIRN_ASSIGN_OR_RETURN(SplitRun run, Debugfs("ls -p " + q));
    const std::string errors = DebugfsErrors(run.err);
    if (!errors.empty()) {
      if (errors.find("not found") != std::string::npos) return Status::NotFound(path + ": " + errors);
      if (errors.find("not a directory") != std::string::npos) {
        return Status::InvalidArgument(path + " is not a directory");
      }
      return Status::IOError("debugfs: " + errors);
    }
    // Lines "/INODE/MODE/UID/GID/NAME/SIZE/" (SIZE empty for directories).
    std::vector<FileEntry> entries;
    std::istringstream in(run.out);
    for (std::string line; std::getline(in, line);) {
      if (line.size() < 2 || line.front() != '/') continue;
      std::vector<std::string> f;
      size_t pos = 1;
      for (int i = 0; i < 4; ++i) {
        size_t slash = line.find('/', pos);
        if (slash == std::string::npos) break;
        f.push_back(line.substr(pos, slash - pos));
        pos = slash + 1;
      }
      // The name may not hold '/', so the last two fields are SIZE/ and NAME.
      if (f.size() != 4 || line.size() < pos + 2 || line.back() != '/') continue;
      std::string rest = line.substr(pos, line.size() - pos - 1);  // NAME/SIZE
      const size_t cut = rest.rfind('/');
      if (cut == std::string::npos) continue;
      FileEntry e;
      e.name = rest.substr(0, cut);
      if (e.name == "." || e.name == ".." || e.name.empty()) continue;
      try {
        e.inode = std::stoull(f[0]);
        e.mode = static_cast<uint32_t>(std::stoul(f[1], nullptr, 8));
        const std::string size = rest.substr(cut + 1);
        e.size = size.empty() ? 0 : std::stoull(size);
      } catch (const std::exception&) {
        return Status::Corruption("debugfs listing line not understood: " + line);
      }
      entries.push_back(std::move(e));
    }
    std::sort(entries.begin(), entries.end(),
              [](const FileEntry& a, const FileEntry& b) { return a.name < b.name; });
    return entries;
  }

  Status Get(const std::string& path, const std::string& dest) {
    CAIRN_ASSIGN_OR_RETURN(std::string q, Quoted(path));
    struct stat st;
    if (::lstat(dest.c_str(), &st) == 0) return Status::AlreadyExists(dest + " exists");
    CAIRN_ASSIGN_OR_RETURN(SplitRun stat_run, Debugfs("stat " + q));
    std::string errors = DebugfsErrors(stat_run.err);
    if (!errors.empty()) return Status::NotFound(path + ": " + errors);
    const bool dir = stat_run.out.find("Type: directory") != std::string::npos;
    if (!dir && stat_run.out.find("Type: regular") == std::string::npos) {
      return Status::InvalidArgument(path + " is neither a regular file nor a directory");
    }
    const std::string temp = dest + ".cairn-tmp." + std::to_string(::getpid());
    if (dir && ::mkdir(temp.c_str(), 0700) != 0) return Status::IOError("mkdir " + temp);
    CAIRN_ASSIGN_OR_RETURN(std::string qt, Quoted(temp));
    CAIRN_ASSIGN_OR_RETURN(SplitRun run, Debugfs((dir ? "rdump " : "dump -p ") + q + " " + qt));
    errors = DebugfsErrors(run.err);
    std::error_code ec;
    std::string done = temp;
    if (dir) {
      std::string base = path;
      while (base.size() > 1 && base.back() == '/') base.pop_back();
      base = base.substr(base.rfind('/') + 1);
      done = temp + "/" + (base.empty() ? "." : base);
    }
    if (!errors.empty() || ::lstat(done.c_str(), &st) != 0) {
      std::filesystem::remove_all(temp, ec);
      return Status::IOError("debugfs could not copy " + path + ": " + errors);
    }
    if (::rename(done.c_str(), dest.c_str()) != 0) {
      const int err = errno;
      std::filesystem::remove_all(temp, ec);
      return Status::IOError("rename to " + dest + ": " + std::strerror(err));
    }
    if (dir) std::filesystem::remove_all(temp, ec);
    return Status::OK();
  }

  const std::string& snapshot() const { return source_->snapshot(); }

 private:
  Status WaitForMount() {
    const auto deadline = std::chrono::steady_clock::now() + kMountWait;
    while (std::chrono::steady_clock::now() < deadline) {
      struct stat st;
      if (::stat(device_.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
          static_cast<uint64_t>(st.st_size) == source_->size()) {
        return Status::OK();
      }
      int status = 0;
      if (::waitpid(fuse_pid_, &status, WNOHANG) == fuse_pid_) {
        fuse_pid_ = -1;
        mounted_ = false;
        return Status::IOError("nbdfuse failed (Debian: libnbd-bin, fuse3; /dev/fuse needed): " +
                               ReadAll(dir_ + "/nbdfuse.log"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return Status::IOError("nbdfuse did not mount in time: " + ReadAll(dir_ + "/nbdfuse.log"));
  }

  // Picks the whole disk or a partition, and checks debugfs can open it.
  Status FindFileSystem(int partition, std::string* description) {
    uint64_t offset = 0;
    std::string where = "the whole disk";
    auto table = RunSplit({"sfdisk", "--json", device_}, dir_);
    nlohmann::json parts;
    if (table.ok() && table->exit_code == 0) {
      nlohmann::json j = nlohmann::json::parse(table->out, nullptr, false);
      if (j.is_object() && j.contains("partitiontable")) {
        parts = j["partitiontable"].value("partitions", nlohmann::json::array());
        sector_ = j["partitiontable"].value("sectorsize", uint64_t{512});
      }
    }
    if (partition > 0) {
      if (!parts.is_array() || static_cast<size_t>(partition) > parts.size()) {
        return Status::InvalidArgument("the disk has no partition " + std::to_string(partition));
      }
      offset = parts[partition - 1].value("start", uint64_t{0}) * sector_;
      where = "partition " + std::to_string(partition);
    } else if (parts.is_array() && !parts.empty()) {
      // The first partition debugfs can open.
      for (size_t i = 0; i < parts.size(); ++i) {
        spec_ = device_ + "?offset=" + std::to_string(parts[i].value("start", uint64_t{0}) * sector_);
        auto probe = Debugfs("stats -h");
        if (probe.ok() && DebugfsErrors(probe->err).empty()) {
          offset = parts[i].value("start", uint64_t{0}) * sector_;
          where = "partition " + std::to_string(i + 1);
          break;
        }
      }
    }
    spec_ = offset == 0 ? device_ : device_ + "?offset=" + std::to_string(offset);
    CAIRN_ASSIGN_OR_RETURN(SplitRun probe, Debugfs("stats -h"));
    const std::string errors = DebugfsErrors(probe.err);
    if (!errors.empty()) {
      auto blkid = RunProcess({"blkid", "-p", "-O", std::to_string(offset), "-o", "value", "-s",
                               "TYPE", device_},
                              std::chrono::seconds(60));
      std::string type = blkid.ok() && blkid->ok ? blkid->output : "unknown";
      while (!type.empty() && (type.back() == '\n' || type.back() == ' ')) type.pop_back();
      return Status::InvalidArgument("no ext2/3/4 file system on " + where + " (blkid: " +
                                     (type.empty() ? "nothing found" : type) +
                                     "); only ext2/3/4 is supported so far");
    }
    *description = "ext2/3/4 on " + where + " at offset " + std::to_string(offset);
    return Status::OK();
  }

  Result<SplitRun> Debugfs(const std::string& request) {
    // Without -w debugfs opens the file system read-only; -c (catastrophic
    // mode) would skip the bitmaps, which reading never needs.
    return RunSplit({"debugfs", "-c", "-R", request, spec_}, dir_);
  }

  std::string dir_, device_, spec_;
  uint64_t sector_ = 512;
  std::unique_ptr<ArchiveSource> source_;
  std::unique_ptr<NbdExport> export_;
  pid_t fuse_pid_ = -1;
  bool mounted_ = false;
};

Result<std::unique_ptr<ArchiveFiles>> ArchiveFiles::Open(const Repository& repo,
                                                         const std::string& snapshot,
                                                         const std::string& archive,
                                                         const ArchiveFilesOptions& options) {
  auto impl = std::make_unique<Impl>();
  std::string description;
  CAIRN_RETURN_IF_ERROR(impl->Open(repo, snapshot, archive, options, &description));
  std::unique_ptr<ArchiveFiles> files(new ArchiveFiles(std::move(impl)));
  files->description_ = description;
  return files;
}

ArchiveFiles::ArchiveFiles(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ArchiveFiles::~ArchiveFiles() = default;
Result<std::vector<FileEntry>> ArchiveFiles::List(const std::string& path) {
  return impl_->List(path);
}
Status ArchiveFiles::Get(const std::string& path, const std::string& dest) {
  return impl_->Get(path, dest);
}
const std::string& ArchiveFiles::snapshot() const { return impl_->snapshot(); }

}  // namespace cairn::client
