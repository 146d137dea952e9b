// cairn map SNAPSHOT ARCHIVE [--socket PATH | --listen HOST:PORT]
// [--cache-size MiB] [--keyfile F] [--passphrase-file P]: serves a disk
// archive read-only as an NBD export until SIGINT/SIGTERM (client/MAP.md).

#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "client/archive_source.h"
#include "client/cli.h"
#include "client/nbd_export.h"

namespace cairn::client {
namespace {

struct MapFlags {
  std::string snapshot, archive, socket, listen;
  uint64_t cache_mib = 256;
  KeyOptions key;
  bool verbose = false;
};

// "HOST:PORT" or "[V6]:PORT" into options.
Status ParseListen(const std::string& text, NbdExportOptions* options) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) {
    return Status::InvalidArgument("--listen takes HOST:PORT, e.g. 127.0.0.1:10809");
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  try {
    size_t used = 0;
    port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) return Status::InvalidArgument("--listen: bad port in " + text);
  options->listen_host = host;
  options->listen_port = port;
  return Status::OK();
}

int RunMap(const GlobalOptions& global, const MapFlags& flags) {
  if (flags.socket.empty() == flags.listen.empty()) {
    return Fail(Status::InvalidArgument("give one of --socket PATH or --listen HOST:PORT"));
  }
  NbdExportOptions eo;
  eo.socket_path = flags.socket;
  if (!flags.listen.empty()) {
    if (Status s = ParseListen(flags.listen, &eo); !s.ok()) return Fail(s);
  }
  if (flags.verbose) {
    eo.log = [](std::string_view line) { std::cerr << "cairn: " << line << "\n"; };
  }
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  // Every thread started from here on inherits the mask: the signals wait
  // for sigwait below, so Ctrl-C ends the export cleanly.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ArchiveSourceOptions so;
  so.cache_bytes = flags.cache_mib << 20;
  so.key = [&flags](const std::string&) { return ReadKeyConfig(flags.key); };
  auto source = ArchiveSource::Open(*repo, flags.snapshot, flags.archive, so);
  if (!source.ok()) return Fail(source.status());
  auto exported = NbdExport::Start(eo, source->get());
  if (!exported.ok()) return Fail(exported.status());
  const std::string uri = (*exported)->Uri();
  if (global.json()) {
    nlohmann::json j = {{"snapshot", (*source)->snapshot()}, {"archive", (*source)->archive()},
                        {"size", (*source)->size()},         {"uri", uri},
                        {"encrypted", !(*source)->fingerprint().empty()}};
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << "serving " << (*source)->snapshot() << " " << (*source)->archive() << " ("
              << HumanSize((*source)->size()) << ", read-only) at " << uri << std::endl;
  }
  int sig = 0;
  sigwait(&stop_signals, &sig);
  (*exported)->Stop();
  const ArchiveSourceStats st = (*source)->stats();
  (*source)->Close();
  std::cerr << "cairn: map stopped (signal " << sig << "): " << st.reads << " reads, "
            << st.chunk_fetches << " chunks fetched (" << HumanSize(st.bytes_downloaded) << "), "
            << st.cache_hits << " cache hits, " << st.failed_fetches << " failed\n";
  return 0;
}

}  // namespace

void AddMapCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto flags = std::make_shared<MapFlags>();
  auto* cmd = app.add_subcommand("map", "serve a disk archive read-only as an NBD export");
  cmd->add_option("SNAPSHOT", flags->snapshot, "vm/ID/YYYY-MM-DDTHH:MM:SSZ or vm/ID/latest")
      ->required();
  cmd->add_option("ARCHIVE", flags->archive, "disk archive, e.g. drive0 or drive0.fidx")
      ->required();
  cmd->add_option("--socket", flags->socket, "unix socket to create (mode 0600)");
  cmd->add_option("--listen", flags->listen, "TCP address HOST:PORT, e.g. 127.0.0.1:10809");
  cmd->add_option("--cache-size", flags->cache_mib, "chunk cache in MiB (default 256)")
      ->check(CLI::Range(uint64_t{8}, uint64_t{1} << 20));
  cmd->add_flag("--verbose", flags->verbose, "log connections and refused requests");
  AddKeyOptions(cmd, &flags->key);
  commands->push_back({cmd, [&global, flags] { return RunMap(global, *flags); }});
}

}  // namespace cairn::client
