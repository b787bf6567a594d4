// A decode step over a batch (runtime/detail/compressed_storage.h's
// match_shared and append_matched): the batch's new K/V are matched against
// the shared tables at once, then each sequence appends its own columns.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "device_util.h"
#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/cache_access.h"
#include "test_util.h"

namespace spindlekv {
namespace {

TEST(BatchedDecode, HoldsAndReturnsWhatEachSequenceAloneDoes) {
  // A decode step matches the whole batch's K/V against the tables at once
  // and then appends each sequence's: the same codes, rows and outputs as
  // decoding each sequence in a cache of its own, in every codebook mode,
  // storage dtype and exact-row format, past the steps where deferred
  // exact-row counts settle.
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  const CacheGeometry g = c.geometry();
  auto artifact = testutil::random_artifact(c, 11);
  struct Variant {
    CodebookMode mode;
    StorageDtype dtype;
    const char* codec;
    bool extend;
  };
  const Variant variants[] = {
      {CodebookMode::kNone, StorageDtype::kFloat32, "none", false},
      {CodebookMode::kCalibrated, StorageDtype::kFloat16, "none", false},
      {CodebookMode::kCalibrated, StorageDtype::kFloat32, "kivi4", false},
      {CodebookMode::kJustInTime, StorageDtype::kFloat32, "none", false},
      {CodebookMode::kJustInTime, StorageDtype::kFloat16, "none", true},
      {CodebookMode::kHybrid, StorageDtype::kBFloat16, "none", false},
      {CodebookMode::kHybrid, StorageDtype::kFloat32, "fp8", true},
  };
  const int64_t B = 3, lengths[B] = {20, 33, 27}, steps = 70;
  for (const Variant& v : variants) {
    CompressionParameters p;
    p.reserve_ratio = 0.5;
    p.window = 4;
    p.codebook = v.mode;
    p.storage_dtype = v.dtype;
    p.set_codec(v.codec);
    p.extend_codebook_when_decoding = v.extend;
    p.key_threshold = p.value_threshold = 0.3;  // random vectors: hits and misses
    const std::string what = std::string("mode ") + to_string(v.mode) + ", " + to_string(v.dtype) +
                             ", " + v.codec + (v.extend ? ", extending" : "");
    at::manual_seed(3);
    CompressedCache batch(g, B, p, artifact);
    std::vector<std::unique_ptr<CompressedCache>> alone;
    for (int64_t b = 0; b < B; ++b) {
      alone.push_back(std::make_unique<CompressedCache>(g, 1, p, artifact));
      for (int64_t l = 0; l < g.num_layers; ++l) {
        const int64_t T = lengths[b];
        at::Tensor keys = at::randn({g.num_kv_heads, T, g.head_dim});
        at::Tensor values = at::randn({g.num_kv_heads, T, g.head_dim});
        at::Tensor attention = at::softmax(at::randn({g.num_heads, p.window, T}), -1);
        batch.prefill(b, l, keys, values, attention);
        alone[b]->prefill(0, l, keys, values, attention);
      }
    }
    for (int64_t s = 0; s < steps; ++s) {
      at::Tensor positions = at::empty({B, 1}, at::kLong);
      for (int64_t b = 0; b < B; ++b) positions[b][0] = batch.next_position(b);
      for (int64_t l = 0; l < g.num_layers; ++l) {
        at::Tensor q = at::randn({B, g.num_heads, 1, g.head_dim});
        at::Tensor k = at::randn({B, g.num_kv_heads, 1, g.head_dim});
        at::Tensor val = at::randn({B, g.num_kv_heads, 1, g.head_dim});
        if (s % 3 == 0) k = k * 0;  // zero vectors take the zero code
        const at::Tensor out = batch.append_and_attend(l, q, k, val, positions);
        for (int64_t b = 0; b < B; ++b) {
          const at::Tensor one =
              alone[b]->append_and_attend(l, q.narrow(0, b, 1), k.narrow(0, b, 1),
                                          val.narrow(0, b, 1), positions.narrow(0, b, 1));
          ASSERT_TRUE(at::allclose(out.narrow(0, b, 1), one, 1e-5, 1e-6))
              << what << ", sequence " << b << ", step " << s << ", layer " << l;
        }
      }
      batch.advance(1);
      for (auto& a : alone) a->advance(1);
    }
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t l = 0; l < g.num_layers; ++l) {
        const detail::DenseLayer x = detail::reconstruct_layer(batch, b, l);
        const detail::DenseLayer y = detail::reconstruct_layer(*alone[b], 0, l);
        EXPECT_TRUE(at::equal(x.keys, y.keys) && at::equal(x.values, y.values) &&
                    at::equal(x.positions, y.positions) && at::equal(x.visible, y.visible))
            << what << ", sequence " << b << ", layer " << l;
      }
    }
    const MemoryReport together = batch.memory();
    for (int64_t l = 0; l < g.num_layers; ++l) {
      int64_t exact = 0, jit = 0, calibrated = 0;
      for (const auto& a : alone) {
        const LayerMemory m = a->memory().layers[l];
        exact += m.exact_vectors, jit += m.jit_vectors, calibrated += m.calibrated_vectors;
      }
      EXPECT_EQ(together.layers[l].exact_vectors, exact) << what << ", layer " << l;
      EXPECT_EQ(together.layers[l].jit_vectors, jit) << what << ", layer " << l;
      EXPECT_EQ(together.layers[l].calibrated_vectors, calibrated) << what << ", layer " << l;
    }
  }
}

}  // namespace
}  // namespace spindlekv
