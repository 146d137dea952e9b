// Fixed index parsing (storage/fixed_index.h): `.fidx` files uploaded by
// clients and read back from the datastore. Invariants: an accepted index has
// a valid geometry, every digest and chunk length is readable, the lengths
// add up to the image size, and the writer rebuilds the same digest list.
#include <string>

#include "storage/fixed_index.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using namespace cairn::storage;

int FuzzFixedIndex(const uint8_t* data, size_t size) {
  auto index = FixedIndex::Parse(AsText(data, size));
  if (!index.ok()) return 0;
  FUZZ_CHECK(ValidateFixedIndexGeometry(index->image_size(), index->chunk_size()).ok());
  FUZZ_CHECK(index->chunk_count() ==
             FixedIndexChunkCount(index->image_size(), index->chunk_size()));
  FUZZ_CHECK(index->bytes().size() == kFixedIndexHeaderSize + kDigestSize * index->chunk_count());
  FixedIndexWriter writer(index->image_size(), index->chunk_size());
  FUZZ_CHECK(writer.status().ok());
  uint64_t total = 0;
  for (uint64_t i = 0; i < index->chunk_count(); ++i) {
    const uint64_t len = index->ChunkLength(i);
    FUZZ_CHECK(len > 0 && len <= index->chunk_size());
    total += len;
    FUZZ_CHECK(writer.Set(i, index->digest(i)).ok());
  }
  FUZZ_CHECK(total == index->image_size());
  auto rebuilt = writer.Finish(index->ctime());
  FUZZ_CHECK(rebuilt.ok());
  auto again = FixedIndex::Parse(*rebuilt);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->checksum() == index->checksum());
  FUZZ_CHECK(again->bytes().substr(kFixedIndexHeaderSize) ==
             index->bytes().substr(kFixedIndexHeaderSize));
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzFixedIndex)
