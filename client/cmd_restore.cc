// cairn restore SNAPSHOT ARCHIVE TARGET [--format raw|qcow2] [--keyfile F]
// [--passphrase-file P]: writes a disk archive of a snapshot to a file or
// block device. An encrypted snapshot needs its key: --keyfile, else the
// default key file when there is one.
// --live --qmp SOCKET [--node NODE] [--speed MB/s]: the VM runs on a qcow2
// overlay over `cairn map` of the same archive; its disk is mirrored to
// TARGET and the VM switched onto it (client/live_restore.h, MAP.md).

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include <filesystem>

#include "client/archive_source.h"
#include "client/cli.h"
#include "client/live_restore.h"
#include "client/encryption_key.h"
#include "client/restore.h"

namespace cairn::client {
namespace {

struct RestoreFlags {
  std::string snapshot, archive, target, format = "raw";
  KeyOptions key;
  bool live = false;
  std::string qmp, node;
  double speed_mb = 0;
};

void ShowRestoreProgress(uint64_t done, uint64_t total) {
  std::fprintf(stderr, "\r\033[Krestored %s of %s", HumanSize(done).c_str(),
               HumanSize(total).c_str());
  if (done >= total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

void ShowMirrorProgress(uint64_t done, uint64_t total) {
  std::fprintf(stderr, "\r\033[Kmirrored %s of %s", HumanSize(done).c_str(),
               HumanSize(total).c_str());
  if (done >= total && total > 0) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

int RunLiveRestore(const GlobalOptions& global, const RestoreFlags& flags,
                   const Repository& repo) {
  if (flags.qmp.empty()) return Fail(Status::InvalidArgument("--live needs --qmp SOCKET"));
  if (flags.format != "raw") return Fail(Status::InvalidArgument("--live writes --format raw"));
  // The archive's size, from the snapshot itself (also: it exists, the key fits).
  ArchiveSourceOptions so;
  so.prefetch_chunks = 0;
  so.key = [&flags](const std::string&) { return ReadKeyConfig(flags.key); };
  auto source = ArchiveSource::Open(repo, flags.snapshot, flags.archive, so);
  if (!source.ok()) return Fail(source.status());
  LiveRestoreOptions lo;
  lo.qmp_socket = flags.qmp;
  lo.node = flags.node;
  lo.target = flags.target;
  lo.expected_size = (*source)->size();
  lo.speed = static_cast<uint64_t>(flags.speed_mb * 1e6);
  (*source)->Close();
  if (!global.json() && ::isatty(2)) lo.progress = ShowMirrorProgress;
  auto r = LiveRestore(lo);
  if (!r.ok()) return Fail(r.status());
  if (global.json()) {
    nlohmann::json j = {{"snapshot", flags.snapshot}, {"archive", flags.archive},
                        {"target", flags.target},     {"live", true},
                        {"node", r->node},            {"target-node", r->target_node},
                        {"size", r->size},            {"seconds", r->seconds},
                        {"notes", r->notes}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "live-restored " << flags.snapshot << " " << flags.archive << " to "
              << flags.target << ": " << HumanSize(r->size) << " in " << r->seconds
              << " s; the VM now runs on it (node " << r->target_node
              << "); stop `cairn map` now\n";
    for (const std::string& n : r->notes) std::cout << "note: " << n << "\n";
  }
  return 0;
}

int RunRestore(const GlobalOptions& global, const RestoreFlags& flags) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  if (flags.live) return RunLiveRestore(global, flags, *repo);
  RestoreOptions ro;
  ro.format = flags.format;
  if (!global.json() && ::isatty(2)) ro.progress = ShowRestoreProgress;
  ro.key = [&flags](const std::string&) { return ReadKeyConfig(flags.key); };
  // GROUP/latest: the group's newest snapshot, named in what is printed.
  auto snapshot = ResolveSnapshotName(*repo, flags.snapshot);
  if (!snapshot.ok()) return Fail(snapshot.status());
  auto r = RestoreArchive(*repo, *snapshot, flags.archive, flags.target, ro);
  if (!r.ok()) return Fail(r.status());
  if (r->fingerprint.empty() && !flags.key.keyfile.empty()) {
    std::cerr << "cairn: note: " << *snapshot << " is not encrypted; --keyfile was not used\n";
  }
  const double mb_per_s =
      r->seconds > 0 ? static_cast<double>(r->image_size) / 1e6 / r->seconds : 0.0;
  if (global.json()) {
    nlohmann::json j = {{"snapshot", *snapshot},         {"archive", flags.archive},
                        {"target", flags.target},        {"format", flags.format},
                        {"size", r->image_size},         {"chunks", r->chunks},
                        {"zero-chunks", r->zero_chunks}, {"bytes-downloaded", r->bytes_downloaded},
                        {"seconds", r->seconds},         {"mb-per-s", mb_per_s},
                        {"encrypted", !r->fingerprint.empty()},
                        {"fingerprint", r->fingerprint.empty() ? nlohmann::json(nullptr)
                                                               : nlohmann::json(r->fingerprint)}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "restored " << *snapshot << " " << flags.archive << " to " << flags.target
              << " (" << flags.format << "): " << HumanSize(r->image_size) << ", " << r->chunks
              << " chunks (" << r->zero_chunks << " zero), " << r->seconds << " s, "
              << Rate(mb_per_s * 1e6);
    if (!r->fingerprint.empty()) std::cout << ", decrypted with key " << r->fingerprint;
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

void AddRestoreCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto flags = std::make_shared<RestoreFlags>();
  auto* cmd = app.add_subcommand("restore", "restore a disk archive of a snapshot");
  cmd->add_option("SNAPSHOT", flags->snapshot, "vm/ID/YYYY-MM-DDTHH:MM:SSZ, or vm/ID/latest")
      ->required();
  cmd->add_option("ARCHIVE", flags->archive, "disk archive, e.g. disk0 or disk0.fidx")->required();
  cmd->add_option("TARGET", flags->target, "file or block device to write")->required();
  cmd->add_option("--format", flags->format, "raw or qcow2")
      ->check(CLI::IsMember({"raw", "qcow2"}));
  AddKeyOptions(cmd, &flags->key);
  cmd->add_flag("--live", flags->live,
                "mirror the running VM's disk (on an overlay over `cairn map`) to TARGET "
                "and switch the VM onto it");
  cmd->add_option("--qmp", flags->qmp, "with --live: the VM's QMP socket");
  cmd->add_option("--node", flags->node,
                  "with --live: the VM's disk node (default: the one backed by NBD)");
  cmd->add_option("--speed", flags->speed_mb, "with --live: mirror limit in MB/s (0 = none)")
      ->check(CLI::NonNegativeNumber);
  commands->push_back({cmd, [&global, flags] { return RunRestore(global, *flags); }});
}

}  // namespace cairn::client
