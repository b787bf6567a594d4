// A decode step over a compressed cache must not make the host wait for the
// device where nothing needs deciding on the host (#16): no value read back
// (`.item()`), no operation whose output size depends on the data (nonzero,
// masked_select, unique), no comparison returning a bool. These are counted
// as LibTorch records them (RecordFunction), so the test runs on the CPU,
// where such reads cost nothing but are issued all the same.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "device_util.h"
#include "op_counter.h"
#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/cache_access.h"
#include "runtime/detail/coded_reads.h"
#include "runtime/detail/compressed_storage.h"
#include "test_util.h"

namespace spindlekv {
namespace {

using testutil::OpCounter;
using testutil::ReadBackCounter;

struct Step {
  at::Tensor queries, keys, values, positions;
};

// One decode token for every sequence, at `position`.
Step decode_step(const CacheGeometry& g, int64_t batch, int64_t position) {
  return {at::randn({batch, g.num_heads, 1, g.head_dim}),
          at::randn({batch, g.num_kv_heads, 1, g.head_dim}),
          at::randn({batch, g.num_kv_heads, 1, g.head_dim}),
          at::full({batch, 1}, position, at::kLong)};
}

// Prefills every layer of both sequences with `tokens` random K/V (keys
// partly on the artifact's entries, so some codes are calibrated) and
// returns the cache ready to decode.
CompressedCache prefilled(const ModelConfig& c, const CompressionParameters& p,
                          const std::shared_ptr<Artifact>& artifact, int64_t tokens) {
  const CacheGeometry g = c.geometry();
  CompressedCache cache(g, 2, p, artifact);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t l = 0; l < g.num_layers; ++l) {
      at::Tensor keys = at::randn({g.num_kv_heads, tokens, g.head_dim});
      at::Tensor values = at::randn({g.num_kv_heads, tokens, g.head_dim});
      at::Tensor attention = at::softmax(at::randn({g.num_heads, p.window, tokens}), -1);
      cache.prefill(b, l, keys, values, attention);
    }
  }
  return cache;
}

CompressionParameters params(CodebookMode mode, double reserve) {
  CompressionParameters p;
  p.reserve_ratio = reserve;
  p.window = 4;
  p.codebook = mode;
  p.key_threshold = p.value_threshold = 0.3;  // random vectors: some hits, some misses
  p.extend_codebook_when_decoding = false;
  return p;
}

TEST(DecodeSync, CounterSeesAReadBack) {
  ReadBackCounter counter;
  at::Tensor t = at::ones({3});
  EXPECT_EQ(t.sum().item<float>(), 3.0f);
  EXPECT_GE(counter.reads(), 1);
  const int before = counter.reads();
  (void)at::nonzero(t);
  EXPECT_GT(counter.reads(), before);
}

TEST(DecodeSync, DecodeStepReadsNothingBackInEveryCodebookMode) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  const CacheGeometry g = c.geometry();
  auto artifact = testutil::random_artifact(c, 5);
  for (CodebookMode mode : {CodebookMode::kNone, CodebookMode::kCalibrated,
                            CodebookMode::kJustInTime, CodebookMode::kHybrid}) {
    for (StorageDtype dtype : {StorageDtype::kFloat32, StorageDtype::kFloat16}) {
      CompressionParameters p = params(mode, 0.5);
      p.storage_dtype = dtype;
      CompressedCache cache = prefilled(c, p, artifact, 24);
      // A step reads back once every kExactSettleSlots slots at most: the
      // steps below stay under that.
      for (int64_t s = 0; s < 8; ++s) {
        const Step step = decode_step(g, 2, 24 + s);
        ReadBackCounter counter;
        for (int64_t l = 0; l < g.num_layers; ++l) {
          cache.append_and_attend(l, step.queries, step.keys, step.values, step.positions);
        }
        cache.advance(1);
        EXPECT_EQ(counter.reads(), 0) << "codebook mode " << static_cast<int>(mode) << ", storage "
                                      << to_string(dtype) << ", step " << s;
      }
    }
  }
}

TEST(DecodeSync, APrefillReadsBackOnceForTheUnionAndOncePerTable) {
  // A layer's prefill waits for the device where the host sizes what it
  // stores: the widest KV head's kept tokens (with whether the query heads
  // of a group disagree), then for each of keys and values its count of
  // misses per KV head (for its exact rows or its just-in-time entries).
  // (On a device the just-in-time graphs add one read of their bits each.)
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  const CacheGeometry g = c.geometry();
  auto artifact = testutil::random_artifact(c, 5);
  for (CodebookMode mode : {CodebookMode::kNone, CodebookMode::kCalibrated,
                            CodebookMode::kJustInTime, CodebookMode::kHybrid}) {
    CompressionParameters p = params(mode, 0.5);
    CompressedCache cache(g, 1, p, artifact);
    const at::Tensor keys = at::randn({g.num_kv_heads, 24, g.head_dim});
    const at::Tensor values = at::randn({g.num_kv_heads, 24, g.head_dim});
    const at::Tensor attention = at::softmax(at::randn({g.num_heads, p.window, 24}), -1);
    ReadBackCounter counter;
    cache.prefill(0, 0, keys, values, attention);
    EXPECT_EQ(counter.reads(), 3) << "codebook mode " << static_cast<int>(mode);
  }
}

TEST(DecodeSync, ADecodeStepMatchesTheWholeBatchAgainstTheCodebookOnce) {
  // Splitting vectors into magnitude and direction, and the calibrated
  // table's product, run once per step and layer whatever the batch size:
  // a launch per sequence is what made batch 16 slow on a GPU.
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  const CacheGeometry g = c.geometry();
  auto artifact = testutil::random_artifact(c, 5);
  for (CodebookMode mode : {CodebookMode::kNone, CodebookMode::kCalibrated}) {
    CompressionParameters p = params(mode, 0.5);
    int norms[2] = {0, 0}, products[2] = {0, 0};
    const int64_t batches[2] = {1, 6};
    for (int i = 0; i < 2; ++i) {
      const int64_t B = batches[i];
      CompressedCache cache(g, B, p, artifact);
      for (int64_t b = 0; b < B; ++b) {
        cache.prefill(b, 0, at::randn({g.num_kv_heads, 24, g.head_dim}),
                      at::randn({g.num_kv_heads, 24, g.head_dim}),
                      at::softmax(at::randn({g.num_heads, p.window, 24}), -1));
      }
      const Step step = decode_step(g, B, 24);
      OpCounter ops;
      cache.append_and_attend(0, step.queries, step.keys, step.values, step.positions);
      norms[i] = ops["aten::norm"];
      // The ATen attention takes one product per sequence for the scores;
      // anything beyond that is the codebook's.
      products[i] = ops["aten::bmm"] - static_cast<int>(B);
    }
    EXPECT_GT(norms[0], 0);
    EXPECT_EQ(norms[1], norms[0]) << "codebook mode " << static_cast<int>(mode);
    EXPECT_EQ(products[1], products[0]) << "codebook mode " << static_cast<int>(mode);
  }
}

TEST(DecodeSync, JustInTimeExtensionReadsBackToBuildEntries) {
  // Building entries from a step's misses is decided on the host.
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  CompressionParameters p = params(CodebookMode::kJustInTime, 0.5);
  p.extend_codebook_when_decoding = true;
  CompressedCache cache = prefilled(c, p, nullptr, 24);
  const Step step = decode_step(c.geometry(), 2, 24);
  ReadBackCounter counter;
  cache.append_and_attend(0, step.queries, step.keys, step.values, step.positions);
  EXPECT_GT(counter.reads(), 0);
}

TEST(DecodeSync, AppendsThatDecideOnTheHostReadBack) {
  // Appends that size their tables on the host read back, and the counter
  // sees it: one that builds just-in-time entries from its misses, and one
  // that counts its exact rows on the host (a prefill).
  const at::Tensor v = at::randn({2, 3, 8});
  const at::Tensor all = at::ones({2, 3}, at::kBool);
  detail::CodebookTables none;
  none.threshold = 0.9;
  for (CodebookMode mode : {CodebookMode::kJustInTime, CodebookMode::kNone}) {
    SCOPED_TRACE(static_cast<int>(mode));
    detail::CodedVectors c = detail::empty_coded(2, 8, at::TensorOptions(), StorageDtype::kFloat32);
    ReadBackCounter counter;
    detail::append_coded(c, v, all, none, mode, mode == CodebookMode::kJustInTime);
    EXPECT_GT(counter.reads(), 0);
  }
}

// Decoding with the exact-row counts left on the device gives the cache
// that counting on the host gives: the same vectors, rows and bytes.
TEST(DecodeSync, DeferredCountsHoldWhatHostCountsHold) {
  for (StorageDtype dtype : {StorageDtype::kFloat32, StorageDtype::kFloat16}) {
    const int64_t kv = 2, d = 8;
    const at::TensorOptions cpu;
    detail::CodedVectors host = detail::empty_coded(kv, d, cpu, dtype);
    detail::CodedVectors deferred = detail::empty_coded(kv, d, cpu, dtype);
    detail::CodebookTables tables;
    at::Tensor entries = at::randn({1, 6, d});
    tables.calibrated = entries / entries.norm(2, -1, true);
    tables.calibrated_sizes = {6};
    tables.threshold = 0.5;
    at::Tensor prefill = at::randn({kv, 10, d});
    at::Tensor valid = at::ones({kv, 10}, at::kBool);
    detail::append_coded(host, prefill, valid, tables, CodebookMode::kCalibrated, false);
    detail::append_coded(deferred, prefill, valid, tables, CodebookMode::kCalibrated, false);
    // 150 steps of one token: more than kExactSettleSlots, so counts settle
    // on the way; every other token lies on an entry.
    for (int64_t s = 0; s < 150; ++s) {
      at::Tensor v = at::randn({kv, 1, d});
      if (s % 2 == 0) v = tables.calibrated[0][s % 6].view({1, 1, d}).expand({kv, 1, d}) * 2.0;
      at::Tensor one = at::ones({kv, 1}, at::kBool);
      detail::append_coded(host, v, one, tables, CodebookMode::kCalibrated, false);
      detail::append_coded(deferred, v, one, tables, CodebookMode::kCalibrated, false, true);
      EXPECT_LE(deferred.exact_unsettled, detail::kExactSettleSlots);
    }
    EXPECT_GT(deferred.exact_unsettled, 0);  // settled at steps 64 and 129 only
    EXPECT_EQ(detail::exact_rows_in_use(deferred), host.exact_count);
    EXPECT_TRUE(at::equal(detail::codes_long(deferred), detail::codes_long(host)));
    EXPECT_TRUE(
        at::equal(detail::reconstruct(deferred, tables), detail::reconstruct(host, tables)));
    const int64_t rows =
        host.exact_count[0] > host.exact_count[1] ? host.exact_count[0] : host.exact_count[1];
    EXPECT_TRUE(at::equal(deferred.exact.narrow(1, 0, rows), host.exact.narrow(1, 0, rows)));
    // Rows past those in use stay zero.
    EXPECT_EQ(
        deferred.exact.narrow(1, rows, deferred.exact.size(1) - rows).abs().sum().item<float>(),
        0.0f);
    detail::settle_exact_rows(deferred);
    EXPECT_EQ(deferred.exact_unsettled, 0);
    EXPECT_EQ(deferred.exact_count, host.exact_count);
  }
}

TEST(DecodeSync, MemoryAndSavedCacheCountDeferredRows) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  const CacheGeometry g = c.geometry();
  auto artifact = testutil::random_artifact(c, 9);
  CompressionParameters p = params(CodebookMode::kCalibrated, 0.5);
  p.storage_dtype = StorageDtype::kFloat32;
  CompressedCache cache = prefilled(c, p, artifact, 24);
  const int64_t before = cache.memory().layers[0].exact_bytes;
  for (int64_t s = 0; s < 5; ++s) {
    const Step step = decode_step(g, 2, 24 + s);
    for (int64_t l = 0; l < g.num_layers; ++l) {
      cache.append_and_attend(l, step.queries, step.keys, step.values, step.positions);
    }
    cache.advance(1);
  }
  // Random vectors at threshold 0.3 of 16 random entries: count the misses
  // from the codes (each exact row has one slot), as memory() must.
  const MemoryReport m = cache.memory();
  EXPECT_GT(m.layers[0].exact_bytes, before);
  EXPECT_EQ(m.layers[0].exact_bytes, m.layers[0].exact_vectors * g.head_dim * 4);
  testutil::TempDir dir;
  cache.save(dir.file("cache.safetensors"));
  CompressedCache loaded = CompressedCache::load(dir.file("cache.safetensors"), g, artifact);
  EXPECT_EQ(loaded.memory().held_bytes, m.held_bytes);
  for (int64_t b = 0; b < 2; ++b) {
    auto x = detail::reconstruct_layer(cache, b, 1), y = detail::reconstruct_layer(loaded, b, 1);
    EXPECT_TRUE(at::equal(x.keys, y.keys) && at::equal(x.values, y.values));
  }
}

}  // namespace
}  // namespace spindlekv
