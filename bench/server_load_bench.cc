// Load benchmark for cairn-server (issue 3): several backup clients push
// random-content 4 MiB chunks over loopback TLS at the same time.
//
// Each client is one backup session of its own group (vm/1, vm/2, ...) that
// uploads its chunks on several parallel keep-alive connections, then writes
// its fixed index and finishes (the server makes the chunks durable there).
// All chunk blobs are generated and hashed before the clock starts, so the
// client's cost of producing data is not measured; what remains on the client
// side is TLS encryption, which shares the machine with the server.
//
// The server is started by the caller (bench/run_server_load.sh) and named by
// port and admin token. Prints aggregate and per-client MB/s (MB = 10^6 bytes
// of chunk payload) from the first upload to the last finish, phase times,
// and, with --server-pid, the server's CPU time over that window.
//
//   server_load_bench --port=N --token=USER!TOKEN:SECRET [--clients=4]
//       [--mib-per-client=1024] [--connections=3] [--store=default]
//       [--server-pid=PID] [--timeout=240]
//
// Exit status: 0 when every request succeeded, 1 on any failure (the first
// one is printed), 2 on bad arguments.

#include <httplib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "storage/blob.h"
#include "storage/digest.h"
#include "storage/fixed_index.h"

namespace cairn::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
using storage::Status;

struct Options {
  int port = 0;
  std::string token;
  std::string store = "default";
  int clients = 4;
  uint64_t mib_per_client = 1024;
  int connections = 3;
  int server_pid = 0;
  int timeout_seconds = 240;
};

bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    size_t eq = a.find('=');
    if (a.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::fprintf(stderr, "unexpected argument %s (flags are --name=value)\n", a.c_str());
      return false;
    }
    std::string key = a.substr(2, eq - 2);
    std::string value = a.substr(eq + 1);
    char* end = nullptr;
    const long long n = std::strtoll(value.c_str(), &end, 10);
    const bool numeric = !value.empty() && *end == '\0' && n >= 0;
    if (key == "token") {
      o->token = value;
    } else if (key == "store") {
      o->store = value;
    } else if (!numeric) {
      std::fprintf(stderr, "--%s needs a non-negative number (or is unknown)\n", key.c_str());
      return false;
    } else if (key == "port") {
      o->port = static_cast<int>(n);
    } else if (key == "clients") {
      o->clients = static_cast<int>(n);
    } else if (key == "mib-per-client") {
      o->mib_per_client = static_cast<uint64_t>(n);
    } else if (key == "connections") {
      o->connections = static_cast<int>(n);
    } else if (key == "server-pid") {
      o->server_pid = static_cast<int>(n);
    } else if (key == "timeout") {
      o->timeout_seconds = static_cast<int>(n);
    } else {
      std::fprintf(stderr, "unknown flag --%s\n", key.c_str());
      return false;
    }
  }
  if (o->port <= 0 || o->token.empty()) {
    std::fprintf(stderr, "--port and --token are required\n");
    return false;
  }
  if (o->clients < 1 || o->clients > 64 || o->connections < 1 || o->connections > 16) {
    std::fprintf(stderr, "--clients must be 1..64 and --connections 1..16\n");
    return false;
  }
  // Whole 4 MiB chunks only: 4 MiB .. 16 GiB per client.
  if (o->mib_per_client < 4 || o->mib_per_client % 4 != 0 || o->mib_per_client > 16384) {
    std::fprintf(stderr, "--mib-per-client must be a multiple of 4 in 4..16384\n");
    return false;
  }
  return true;
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The first failure wins; every thread stops soon after one happens.
class Failure {
 public:
  void Set(const std::string& what) {
    std::lock_guard lock(mu_);
    if (!failed_.exchange(true)) message_ = what;
  }
  bool failed() const { return failed_.load(); }
  std::string message() {
    std::lock_guard lock(mu_);
    return message_;
  }

 private:
  std::mutex mu_;
  std::atomic<bool> failed_{false};
  std::string message_;
};

std::string Describe(const httplib::Result& r) {
  if (!r) return "transport error: " + httplib::to_string(r.error());
  return "HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 300);
}

// A fast, seedable generator: its output is incompressible for zstd, which
// is all "random content" has to mean here.
uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct Chunk {
  std::string blob;  // the plain blob as uploaded
  storage::Digest digest;
};

struct Client {
  int number = 0;  // 1-based: group vm/<number>
  std::vector<Chunk> chunks;
  std::string index;  // the .fidx for all chunks, built before timing
  std::vector<std::unique_ptr<httplib::SSLClient>> conns;
  std::string session;
  std::atomic<size_t> next{0};
  std::atomic<size_t> stored_new{0};
  Clock::time_point uploads_done, index_done, finished;
};

// Builds client `c`'s blobs, digests and index. Seeds differ per run so a
// reused datastore would still see new chunks.
bool Generate(Client* c, uint64_t chunk_count, uint64_t run_seed, Failure* failure) {
  c->chunks.resize(chunk_count);
  std::string payload(storage::kChunkSize, '\0');
  storage::FixedIndexWriter writer(chunk_count * storage::kChunkSize);
  for (uint64_t i = 0; i < chunk_count; ++i) {
    uint64_t state = run_seed ^ (static_cast<uint64_t>(c->number) << 40) ^ (i * 0x100000001B3ull);
    for (size_t off = 0; off < payload.size(); off += 8) {
      const uint64_t v = SplitMix64(&state);
      std::memcpy(payload.data() + off, &v, 8);
    }
    Chunk& ch = c->chunks[i];
    ch.digest = storage::Sha256(payload);
    ch.blob = storage::EncodeBlob(payload, /*compress=*/false);
    auto kind = storage::CheckBlob(ch.blob);
    if (!kind.ok() || *kind != storage::BlobKind::kPlain) {
      failure->Set("generated blob is not a valid plain blob");
      return false;
    }
    if (Status s = writer.Set(i, ch.digest); !s.ok()) {
      failure->Set("index: " + s.ToString());
      return false;
    }
  }
  auto index = writer.Finish(static_cast<int64_t>(std::time(nullptr)));
  if (!index.ok()) {
    failure->Set("index: " + index.status().ToString());
    return false;
  }
  c->index = std::move(*index);
  return true;
}

std::unique_ptr<httplib::SSLClient> Connect(const Options& o) {
  auto cli = std::make_unique<httplib::SSLClient>("127.0.0.1", o.port);
  // The server's self-signed certificate on loopback; pinning is the real
  // client's job and costs nothing per request.
  cli->enable_server_certificate_verification(false);
  cli->set_keep_alive(true);
  cli->set_tcp_nodelay(true);  // as the real client (client/api_client.cc)
  cli->set_connection_timeout(10, 0);
  cli->set_read_timeout(o.timeout_seconds, 0);
  cli->set_write_timeout(o.timeout_seconds, 0);
  cli->set_default_headers({{"Authorization", "CairnToken " + o.token}});
  return cli;
}

// One connection's share of a client's uploads: takes chunk numbers from the
// client's counter until none are left.
void UploadLoop(Client* c, httplib::SSLClient* cli, Failure* failure) {
  const std::string base = "/api/v1/backup/" + c->session + "/chunk?digest=";
  const std::string size = "&size=" + std::to_string(storage::kChunkSize);
  while (!failure->failed()) {
    const size_t i = c->next.fetch_add(1);
    if (i >= c->chunks.size()) return;
    const Chunk& ch = c->chunks[i];
    const std::string& blob = ch.blob;
    // A content provider sends straight from our buffer; the std::string
    // overload would copy each 4 MiB body first.
    auto r = cli->Post(
        base + ch.digest.ToHex() + size, blob.size(),
        [&blob](size_t offset, size_t length, httplib::DataSink& sink) {
          return sink.write(blob.data() + offset, length);
        },
        "application/octet-stream");
    if (!r || r->status != 201) {
      failure->Set("vm/" + std::to_string(c->number) + " chunk " + std::to_string(i) + ": " +
                   Describe(r) + (r && r->status == 200 ? " (chunk already existed)" : ""));
      return;
    }
    c->stored_new.fetch_add(1);
  }
}

// Index and finish on the client's first connection.
void Commit(Client* c, Failure* failure) {
  httplib::SSLClient* cli = c->conns[0].get();
  auto r = cli->Post("/api/v1/backup/" + c->session + "/index?archive=drive-scsi0.fidx", c->index,
                     "application/octet-stream");
  if (!r || r->status != 200) {
    failure->Set("vm/" + std::to_string(c->number) + " index: " + Describe(r));
    return;
  }
  c->index_done = Clock::now();
  json body = {{"client", {{"name", "server_load_bench"}}}};
  r = cli->Post("/api/v1/backup/" + c->session + "/finish", body.dump(), "application/json");
  if (!r || r->status != 200) {
    failure->Set("vm/" + std::to_string(c->number) + " finish: " + Describe(r));
    return;
  }
  json j = json::parse(r->body, nullptr, false);
  const uint64_t want = c->chunks.size();
  if (j.is_discarded() || j["stats"]["chunks-new"] != want ||
      j["stats"]["chunks-referenced"] != want) {
    failure->Set("vm/" + std::to_string(c->number) + " finish stats unexpected: " + r->body);
    return;
  }
  c->finished = Clock::now();
}

// utime + stime of a process in seconds; negative when unreadable.
double ProcessCpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(text.substr(paren + 2));
  std::string f;
  // Fields after the command: state is field 3; utime and stime are 14, 15.
  unsigned long long utime = 0, stime = 0;
  for (int n = 3; n <= 15 && fields >> f; ++n) {
    if (n == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
    if (n == 15) stime = std::strtoull(f.c_str(), nullptr, 10);
  }
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return static_cast<double>(utime + stime) / tick;
}

double SelfCpuSeconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

int Run(const Options& o) {
  Failure failure;
  const uint64_t chunks_per_client = o.mib_per_client / 4;
  std::vector<std::unique_ptr<Client>> clients;
  for (int n = 1; n <= o.clients; ++n) {
    clients.push_back(std::make_unique<Client>());
    clients.back()->number = n;
  }

  // --- Untimed: data, connections, sessions. ---
  auto gen_start = Clock::now();
  const uint64_t run_seed = std::random_device{}() ^ (static_cast<uint64_t>(::getpid()) << 32) ^
                            static_cast<uint64_t>(gen_start.time_since_epoch().count());
  {
    std::vector<std::thread> gen;
    for (auto& c : clients) {
      gen.emplace_back([&, cp = c.get()] { Generate(cp, chunks_per_client, run_seed, &failure); });
    }
    for (auto& t : gen) t.join();
  }
  if (failure.failed()) {
    std::fprintf(stderr, "FAILED: %s\n", failure.message().c_str());
    return 1;
  }
  std::printf("generated %d x %" PRIu64 " chunks of 4 MiB in %.1f s (not timed)\n", o.clients,
              chunks_per_client, Seconds(gen_start, Clock::now()));

  for (auto& c : clients) {
    for (int k = 0; k < o.connections; ++k) c->conns.push_back(Connect(o));
    json body = {{"group", "vm/" + std::to_string(c->number)}};
    auto r = c->conns[0]->Post("/api/v1/datastores/" + o.store + "/backup", body.dump(),
                               "application/json");
    if (!r || r->status != 201) {
      std::fprintf(stderr, "FAILED: start backup of vm/%d: %s\n", c->number, Describe(r).c_str());
      return 1;
    }
    json j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j["session"].is_string()) {
      std::fprintf(stderr, "FAILED: start backup answered %s\n", r->body.c_str());
      return 1;
    }
    c->session = j["session"].get<std::string>();
    // Handshake every connection now: TLS setup is not what is measured.
    for (auto& conn : c->conns) {
      auto v = conn->Get("/api/v1/version");
      if (!v || v->status != 200) {
        std::fprintf(stderr, "FAILED: GET /version: %s\n", Describe(v).c_str());
        return 1;
      }
    }
  }

  // --- Timed: uploads, index, finish. ---
  const double server_cpu0 = o.server_pid > 0 ? ProcessCpuSeconds(o.server_pid) : -1;
  const double client_cpu0 = SelfCpuSeconds();
  std::barrier start(static_cast<std::ptrdiff_t>(o.clients) * o.connections + 1);
  std::vector<std::thread> threads;
  std::vector<std::atomic<int>> remaining(clients.size());
  for (size_t ci = 0; ci < clients.size(); ++ci) {
    Client* c = clients[ci].get();
    remaining[ci] = o.connections;
    for (int k = 0; k < o.connections; ++k) {
      threads.emplace_back([&, c, ci, k] {
        start.arrive_and_wait();
        UploadLoop(c, c->conns[static_cast<size_t>(k)].get(), &failure);
        // The last connection of a client to run dry commits it.
        if (remaining[ci].fetch_sub(1) == 1) {
          c->uploads_done = Clock::now();
          if (!failure.failed()) Commit(c, &failure);
        }
      });
    }
  }
  start.arrive_and_wait();
  const auto t0 = Clock::now();
  for (auto& t : threads) t.join();
  const auto t1 = Clock::now();
  const double server_cpu = o.server_pid > 0 ? ProcessCpuSeconds(o.server_pid) - server_cpu0 : -1;
  const double client_cpu = SelfCpuSeconds() - client_cpu0;

  if (failure.failed()) {
    std::fprintf(stderr, "FAILED: %s\n", failure.message().c_str());
    return 1;
  }

  const double mb_per_client = static_cast<double>(chunks_per_client * storage::kChunkSize) / 1e6;
  const double wall = Seconds(t0, t1);
  std::printf("\n%d clients x %" PRIu64
              " MiB, %d connections each, 4 MiB plain chunks, TLS on "
              "loopback\n",
              o.clients, o.mib_per_client, o.connections);
  std::printf("%-7s %9s %10s %9s %10s %10s\n", "client", "MB/s", "uploads s", "index s", "finish s",
              "total s");
  for (auto& c : clients) {
    const double total = Seconds(t0, c->finished);
    std::printf("vm/%-4d %9.0f %10.2f %9.3f %10.3f %10.2f\n", c->number, mb_per_client / total,
                Seconds(t0, c->uploads_done), Seconds(c->uploads_done, c->index_done),
                Seconds(c->index_done, c->finished), total);
  }
  const double total_mb = mb_per_client * o.clients;
  std::printf("aggregate: %.0f MB/s (%.0f MB of chunk data verified and stored in %.2f s)\n",
              total_mb / wall, total_mb, wall);
  std::printf("client process CPU: %.1f s (%.0f%% of one core)\n", client_cpu,
              100 * client_cpu / wall);
  if (server_cpu >= 0) {
    std::printf("server process CPU: %.1f s (%.0f%% of one core, %.2f ms per MB)\n", server_cpu,
                100 * server_cpu / wall, 1000 * server_cpu / total_mb);
  }
  if (server_cpu >= 0) {
    // What the CPU alone would allow if nothing else ran on the machine:
    // useful when other work shares the cores and the wall-clock rate is noisy.
    const double ms_per_mb = 1000 * (server_cpu + client_cpu) / total_mb;
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    std::printf(
        "CPU bound: %.2f ms per MB (server + client) on %u cores -> at most %.0f MB/s "
        "on an otherwise idle machine\n",
        ms_per_mb, cores, 1000.0 * cores / ms_per_mb);
  }
  std::printf("RESULT aggregate_mb_s=%.1f wall_s=%.3f server_cpu_s=%.2f client_cpu_s=%.2f\n",
              total_mb / wall, wall, server_cpu, client_cpu);
  return 0;
}

}  // namespace
}  // namespace cairn::bench

int main(int argc, char** argv) {
  cairn::bench::Options o;
  if (!cairn::bench::ParseArgs(argc, argv, &o)) return 2;
  return cairn::bench::Run(o);
}
