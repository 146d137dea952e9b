// cairn restore SNAPSHOT ARCHIVE TARGET [--format raw|qcow2]: writes a disk
// archive of a snapshot to a file or block device.

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "client/cli.h"
#include "client/restore.h"

namespace cairn::client {
namespace {

struct RestoreFlags {
  std::string snapshot, archive, target, format = "raw";
};

void ShowRestoreProgress(uint64_t done, uint64_t total) {
  std::fprintf(stderr, "\r\033[Krestored %s of %s", HumanSize(done).c_str(),
               HumanSize(total).c_str());
  if (done >= total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

int RunRestore(const GlobalOptions& global, const RestoreFlags& flags) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  RestoreOptions ro;
  ro.format = flags.format;
  if (!global.json() && ::isatty(2)) ro.progress = ShowRestoreProgress;
  auto r = RestoreArchive(*repo, flags.snapshot, flags.archive, flags.target, ro);
  if (!r.ok()) return Fail(r.status());
  const double mb_per_s =
      r->seconds > 0 ? static_cast<double>(r->image_size) / 1e6 / r->seconds : 0.0;
  if (global.json()) {
    nlohmann::json j = {{"snapshot", flags.snapshot},    {"archive", flags.archive},
                        {"target", flags.target},        {"format", flags.format},
                        {"size", r->image_size},         {"chunks", r->chunks},
                        {"zero-chunks", r->zero_chunks}, {"bytes-downloaded", r->bytes_downloaded},
                        {"seconds", r->seconds},         {"mb-per-s", mb_per_s}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "restored " << flags.snapshot << " " << flags.archive << " to " << flags.target
              << " (" << flags.format << "): " << HumanSize(r->image_size) << ", " << r->chunks
              << " chunks (" << r->zero_chunks << " zero), " << r->seconds << " s, "
              << Rate(mb_per_s * 1e6) << "\n";
  }
  return 0;
}

}  // namespace

void AddRestoreCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto flags = std::make_shared<RestoreFlags>();
  auto* cmd = app.add_subcommand("restore", "restore a disk archive of a snapshot");
  cmd->add_option("SNAPSHOT", flags->snapshot, "vm/ID/YYYY-MM-DDTHH:MM:SSZ")->required();
  cmd->add_option("ARCHIVE", flags->archive, "disk archive, e.g. disk0 or disk0.fidx")->required();
  cmd->add_option("TARGET", flags->target, "file or block device to write")->required();
  cmd->add_option("--format", flags->format, "raw or qcow2")
      ->check(CLI::IsMember({"raw", "qcow2"}));
  commands->push_back({cmd, [&global, flags] { return RunRestore(global, *flags); }});
}

}  // namespace cairn::client
