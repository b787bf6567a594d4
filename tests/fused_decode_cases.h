// Shared by the fused decode tests (fused_decode_test.cpp on a GPU,
// fused_decode_emulated_test.cpp under the CPU emulation of CUDA): the
// cases, a decode of each with and without the fused path, and the checks
// that the two agree.
#pragma once

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "device_util.h"
#include "op_counter.h"
#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/compressed_storage.h"
#include "test_util.h"

namespace spindlekv::testutil {

struct Case {
  std::string name;
  int64_t heads, kv_heads, head_dim;
  CompressionParameters params;
  int64_t sliding_window = 0;
};

inline CompressionParameters params(CodebookMode mode, double reserve, StorageDtype dtype) {
  CompressionParameters p;
  p.reserve_ratio = reserve;
  p.window = 4;
  p.codebook = mode;
  p.storage_dtype = dtype;
  p.key_threshold = p.value_threshold = 0.3;  // random vectors: some hits, some misses
  return p;
}

inline std::vector<Case> cases() {
  std::vector<Case> out;
  const struct {
    CodebookMode mode;
    const char* name;
  } modes[] = {{CodebookMode::kNone, "eviction"},
               {CodebookMode::kCalibrated, "calibrated"},
               {CodebookMode::kJustInTime, "jit"},
               {CodebookMode::kHybrid, "hybrid"}};
  const struct {
    StorageDtype dtype;
    const char* name;
  } dtypes[] = {{StorageDtype::kFloat32, "float32"},
                {StorageDtype::kFloat16, "float16"},
                {StorageDtype::kBFloat16, "bfloat16"}};
  for (const auto& m : modes) {
    for (const auto& t : dtypes) {
      out.push_back(
          {std::string(m.name) + "/" + t.name + "/d32", 4, 1, 32, params(m.mode, 0.4, t.dtype)});
    }
    out.push_back({std::string(m.name) + "/bfloat16/d128", 32, 8, 128,
                   params(m.mode, 0.3, StorageDtype::kBFloat16)});
  }
  CompressionParameters avg = params(CodebookMode::kCalibrated, 0.3, StorageDtype::kFloat16);
  avg.gqa = GqaMode::kGroupAverage;  // no membership mask
  out.push_back({"calibrated/group-average/d64", 8, 2, 64, avg});
  out.push_back(
      {"all-kept/d256", 8, 8, 256, params(CodebookMode::kNone, 1.0, StorageDtype::kFloat16)});
  Case window{"sliding-window/d64", 8, 2, 64,
              params(CodebookMode::kCalibrated, 0.5, StorageDtype::kFloat32)};
  window.sliding_window = 20;
  out.push_back(window);
  return out;
}

// Prefills every layer of `lengths.size()` sequences of different lengths
// (keys and values half on the artifact's entries) and decodes `steps`
// tokens, returning every step's output of every layer.
inline std::vector<at::Tensor> decode(const Case& c, bool fused,
                                      const std::vector<int64_t>& lengths, int64_t steps,
                                      c10::Device device,
                                      std::unique_ptr<CompressedCache>* keep = nullptr) {
  ModelConfig config = testutil::tiny_config(c.heads, c.kv_heads, c.head_dim);
  CacheGeometry g = config.geometry();
  g.sliding_window = c.sliding_window;
  const auto artifact = testutil::random_artifact(config, 7);
  CompressionParameters p = c.params;
  p.fused_decode = fused;
  auto owned = std::make_unique<CompressedCache>(g, static_cast<int64_t>(lengths.size()), p,
                                                 artifact, device);
  CompressedCache& cache = *owned;
  at::manual_seed(11);
  const int64_t B = static_cast<int64_t>(lengths.size());
  for (int64_t b = 0; b < B; ++b) {
    const int64_t T = lengths[b];
    for (int64_t l = 0; l < g.num_layers; ++l) {
      at::Tensor keys = at::randn({g.num_kv_heads, T, g.head_dim});
      at::Tensor values = at::randn({g.num_kv_heads, T, g.head_dim});
      at::Tensor on_entry = at::rand({1, T, 1}) < 0.5;
      const ArtifactLayer& L = artifact->layers[l];
      at::Tensor kc = L.key_codebook.narrow(1, 0, 1).expand({g.num_kv_heads, T, g.head_dim});
      at::Tensor vc = L.value_codebook.narrow(1, 1, 1).expand({g.num_kv_heads, T, g.head_dim});
      keys = at::where(on_entry, 2.0 * kc, keys);
      values = at::where(on_entry, 0.5 * vc, values);
      at::Tensor attention = at::softmax(at::randn({g.num_heads, p.window, T}), -1);
      cache.prefill(b, l, keys, values, attention);
    }
  }
  std::vector<at::Tensor> out;
  for (int64_t s = 0; s < steps; ++s) {
    at::Tensor positions = at::empty({B, 1}, at::kLong);
    for (int64_t b = 0; b < B; ++b) positions[b][0] = lengths[b] + s;
    for (int64_t l = 0; l < g.num_layers; ++l) {
      at::Tensor q = at::randn({B, g.num_heads, 1, g.head_dim});
      at::Tensor k = at::randn({B, g.num_kv_heads, 1, g.head_dim});
      at::Tensor v = at::randn({B, g.num_kv_heads, 1, g.head_dim});
      out.push_back(cache.append_and_attend(l, q.to(device), k.to(device), v.to(device), positions)
                        .to(at::kCPU));
    }
    cache.advance(1);
  }
  if (keep != nullptr) *keep = std::move(owned);
  return out;
}

inline void expect_same(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want,
                        const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].sizes(), want[i].sizes()) << what << ", output " << i;
    EXPECT_TRUE(at::allclose(got[i], want[i], 1e-4, 1e-4))
        << what << ", output " << i << ": max difference "
        << (got[i] - want[i]).abs().max().item<double>();
  }
}

// Launches of the fused kernels while it lives, by the names the host side
// records them under (decode_attention.cpp).
class KernelCalls {
 public:
  int64_t attention() const { return ops_["spindlekv::decode_attention_kernel"]; }
  int64_t append() const { return ops_["spindlekv::decode_append_kernel"]; }

 private:
  OpCounter ops_;
};

// Launches of the fused append per layer and step: one per 8 sequences
// (the cases quantise nothing, so every codebook mode takes it).
inline int64_t append_launches(size_t sequences) {
  return (static_cast<int64_t>(sequences) + 7) / 8;
}

// What one side holds after the fused and the ATen appends: the same codes,
// magnitudes and exact rows.
inline void expect_same_side(const detail::CodedVectors& got, const detail::CodedVectors& want,
                             const std::string& what) {
  EXPECT_TRUE(at::equal(detail::codes_long(got), detail::codes_long(want))) << what << ": codes";
  EXPECT_EQ(got.code.scalar_type(), want.code.scalar_type()) << what;
  EXPECT_TRUE(at::allclose(got.magnitude.to(at::kFloat), want.magnitude.to(at::kFloat), 1e-5, 0))
      << what << ": magnitudes";
  const std::vector<int64_t> used = detail::exact_rows_in_use(got);
  ASSERT_EQ(used, detail::exact_rows_in_use(want)) << what << ": exact rows in use";
  for (size_t g = 0; g < used.size(); ++g) {
    EXPECT_TRUE(at::equal(got.exact[g].narrow(0, 0, used[g]), want.exact[g].narrow(0, 0, used[g])))
        << what << ": exact rows of head " << g;
  }
  // An entry is a unit direction, divided by a norm summed in another
  // order: a 16-bit entry may round the other way (one unit in the last place).
  const double tol = got.jit.scalar_type() == at::kFloat ? 1e-6 : 1e-2;
  const std::vector<int64_t> entries = detail::jit_entries_in_use(got);
  ASSERT_EQ(entries, detail::jit_entries_in_use(want)) << what << ": just-in-time entries";
  for (size_t g = 0; g < entries.size(); ++g) {
    EXPECT_TRUE(at::allclose(got.jit[g].narrow(0, 0, entries[g]).to(at::kFloat),
                             want.jit[g].narrow(0, 0, entries[g]).to(at::kFloat), tol, tol))
        << what << ": just-in-time entries of head " << g;
  }
}

}  // namespace spindlekv::testutil
