#pragma once

// What the fuzz targets share. Each tests/fuzz/<target>_fuzz.cc defines
// `int Fuzz<Target>(const uint8_t* data, size_t size)` (the body of the
// fuzzer, declared below) and, unless CAIRN_FUZZ_NO_MAIN is defined, the
// libFuzzer entry point calling it. tests/fuzz/fuzz_regression_test.cc
// compiles the same files with CAIRN_FUZZ_NO_MAIN into the normal (gcc) unit
// tests and replays the checked-in corpora and tests/testdata/fuzz/ inputs.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

// An invariant of a parser; a violation aborts, which libFuzzer reports as a
// crash with the input that caused it.
#define FUZZ_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

#ifdef CAIRN_FUZZ_NO_MAIN
#define CAIRN_FUZZ_ENTRY(fn)
#else
#define CAIRN_FUZZ_ENTRY(fn)                                                  \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { \
    return cairn::fuzz::fn(data, size);                                     \
  }
#endif

namespace cairn::fuzz {

inline std::string_view AsText(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

int FuzzBlob(const uint8_t* data, size_t size);
int FuzzFixedIndex(const uint8_t* data, size_t size);
int FuzzManifest(const uint8_t* data, size_t size);
int FuzzNames(const uint8_t* data, size_t size);
int FuzzCalendarEvent(const uint8_t* data, size_t size);
int FuzzTzif(const uint8_t* data, size_t size);
int FuzzJsonSplitter(const uint8_t* data, size_t size);
int FuzzQmp(const uint8_t* data, size_t size);
int FuzzGuestAgent(const uint8_t* data, size_t size);
int FuzzKeyFile(const uint8_t* data, size_t size);
int FuzzHttpBody(const uint8_t* data, size_t size);
int FuzzChunkUpload(const uint8_t* data, size_t size);
int FuzzNbd(const uint8_t* data, size_t size);

}  // namespace cairn::fuzz
