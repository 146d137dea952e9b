// Blob decoding (storage/blob.h): every chunk and small file the server
// receives or reads back. Invariants: the parsers agree with each other, a
// decoded payload re-encodes and decodes to itself, and any bytes survive
// EncodeBlob/DecodeBlob unchanged.
#include <string>

#include "storage/blob.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using namespace cairn::storage;

int FuzzBlob(const uint8_t* data, size_t size) {
  const std::string_view in = AsText(data, size);
  // Small bound: the fuzzer should not spend its time allocating 16 MiB.
  constexpr size_t kMax = 1 << 20;

  const auto peek = PeekBlobKind(in.substr(0, kBlobMagicSize));
  auto view = ParseBlob(in);
  auto checked = CheckBlob(in);
  if (view.ok()) {
    FUZZ_CHECK(peek.has_value() && *peek == view->kind);
    FUZZ_CHECK(checked.ok() && *checked == view->kind);
    FUZZ_CHECK(view->payload.size() <= in.size());
    if (view->encrypted()) {
      FUZZ_CHECK(view->iv.size() == kBlobIvSize && view->tag.size() == kBlobTagSize);
      (void)EncryptedSizeFits(*view, view->payload.size());
    }
  } else {
    FUZZ_CHECK(!checked.ok());
  }

  std::string payload;
  Status st = DecodeBlob(in, &payload, kMax);
  if (st.ok()) {
    FUZZ_CHECK(view.ok() && !view->encrypted());
    FUZZ_CHECK(payload.size() <= kMax);
    std::string again;
    FUZZ_CHECK(DecodeBlob(EncodeBlob(payload), &again, kMax).ok() && again == payload);
  }

  // Any bytes round-trip, compressed or not, through both encoders.
  if (in.size() <= kMax) {
    std::string out;
    FUZZ_CHECK(DecodeBlob(EncodeBlob(in, size % 2 == 0), &out, kMax).ok() && out == in);
    BlobEncoder encoder;
    auto enc = encoder.Encode(in);
    FUZZ_CHECK(enc.ok());
    FUZZ_CHECK(DecodeBlob(*enc, &out, kMax).ok() && out == in);
  }
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzBlob)
