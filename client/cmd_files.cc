// cairn files SNAPSHOT ARCHIVE ls PATH | get PATH DEST [--partition N]:
// single files from an ext2/3/4 file system in a disk archive
// (client/archive_files.h, client/MAP.md).

#include <filesystem>
#include <iostream>
#include <memory>

#include "client/archive_files.h"
#include "client/cli.h"

namespace cairn::client {
namespace {

struct FilesFlags {
  std::string snapshot, archive, path, dest;
  int partition = 0;
  KeyOptions key;
};

Result<std::unique_ptr<ArchiveFiles>> OpenFiles(const GlobalOptions& global,
                                                const FilesFlags& flags) {
  CAIRN_ASSIGN_OR_RETURN(Repository repo, global.Resolve());
  ArchiveFilesOptions fo;
  fo.partition = flags.partition;
  fo.source.key = [&flags](const std::string&) { return ReadKeyConfig(flags.key); };
  return ArchiveFiles::Open(repo, flags.snapshot, flags.archive, fo);
}

int RunLs(const GlobalOptions& global, const FilesFlags& flags) {
  auto files = OpenFiles(global, flags);
  if (!files.ok()) return Fail(files.status());
  auto entries = (*files)->List(flags.path);
  if (!entries.ok()) return Fail(entries.status());
  if (global.json()) {
    nlohmann::json j = nlohmann::json::array();
    for (const FileEntry& e : *entries) {
      j.push_back({{"name", e.name}, {"mode", e.mode}, {"size", e.size}, {"inode", e.inode},
                   {"dir", e.is_dir()}});
    }
    std::cout << j.dump() << "\n";
    return 0;
  }
  for (const FileEntry& e : *entries) {
    char mode[16];
    std::snprintf(mode, sizeof(mode), "%06o", e.mode);
    std::cout << mode << " " << e.size << "\t" << e.name << (e.is_dir() ? "/" : "") << "\n";
  }
  return 0;
}

int RunGet(const GlobalOptions& global, const FilesFlags& flags) {
  auto files = OpenFiles(global, flags);
  if (!files.ok()) return Fail(files.status());
  Status s = (*files)->Get(flags.path, flags.dest);
  if (!s.ok()) return Fail(s);
  if (!global.json()) std::cout << "copied " << flags.path << " to " << flags.dest << "\n";
  return 0;
}

}  // namespace

void AddFilesCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto flags = std::make_shared<FilesFlags>();
  auto* files = app.add_subcommand("files", "list or copy files of a disk archive (ext2/3/4)");
  files->add_option("SNAPSHOT", flags->snapshot, "vm/ID/TIME or vm/ID/latest")->required();
  files->add_option("ARCHIVE", flags->archive, "disk archive, e.g. drive0")->required();
  files->add_option("--partition", flags->partition, "partition number (default: find it)");
  AddKeyOptions(files, &flags->key);
  files->require_subcommand(1);
  auto* ls = files->add_subcommand("ls", "list a directory");
  ls->add_option("PATH", flags->path, "directory in the file system")->required();
  auto* get = files->add_subcommand("get", "copy a file or directory out");
  get->add_option("PATH", flags->path, "file or directory in the file system")->required();
  get->add_option("DEST", flags->dest, "new local file or directory")->required();
  commands->push_back({ls, [&global, flags] { return RunLs(global, *flags); }});
  commands->push_back({get, [&global, flags] { return RunGet(global, *flags); }});
}

}  // namespace cairn::client
