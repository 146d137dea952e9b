#pragma once

// Synthetic data shared by the benchmarks. Header-only: each benchmark is a
// single .cc file.

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>

namespace cairn::bench {

// Log-like lines: a timestamp (from `start_time` on), a host, a level and a
// handful of words drawn with a skew towards the common ones, plus a number.
// Compresses about like system logs and text files do (zstd -1 about 3×),
// the middle ground between random and zero data. The same seed and start
// time give the same `size` bytes.
inline std::string LogText(size_t size, uint64_t seed, uint64_t start_time = 1714564800) {
  static constexpr std::string_view kWords[] = {
      "the",      "of",      "and",      "to",      "in",      "is",        "for",       "on",
      "with",     "that",    "by",       "from",    "as",      "at",        "request",   "response",
      "client",   "server",  "session",  "backup",  "chunk",   "snapshot",  "datastore", "index",
      "manifest", "upload",  "verify",   "error",   "warning", "connected", "closed",    "timeout",
      "retrying", "started", "finished", "user",    "root",    "kernel",    "network",   "device",
      "block",    "write",   "read",     "bytes",   "seconds", "ok",        "failed",    "denied",
      "granted",  "cache",   "memory",   "process", "thread",  "queue",     "worker",    "task",
      "config",   "loaded",  "value",    "key",     "path",    "file",      "folder",    "sync"};
  static constexpr std::string_view kHosts[] = {"pve1", "pve2", "backup01", "web-03"};
  static constexpr std::string_view kLevels[] = {"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"};
  constexpr size_t kWordCount = sizeof(kWords) / sizeof(kWords[0]);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> word(0, kWordCount - 1);
  std::string s;
  s.reserve(size + 256);
  uint64_t t = start_time;
  char num[64];
  while (s.size() < size) {
    t += rng() % 3;
    std::snprintf(num, sizeof(num), "%llu.%03u ", static_cast<unsigned long long>(t),
                  static_cast<unsigned>(rng() % 1000));
    s += num;
    s += kHosts[rng() % 4];
    s += ' ';
    s += kLevels[rng() % 6];
    s += ' ';
    const size_t words = 4 + rng() % 10;
    for (size_t i = 0; i < words; ++i) {
      const size_t a = word(rng), b = word(rng);
      s += kWords[a < b ? a : b];
      s += ' ';
    }
    std::snprintf(num, sizeof(num), "%u\n", static_cast<unsigned>(rng() % 100000));
    s += num;
  }
  s.resize(size);
  return s;
}

}  // namespace cairn::bench
