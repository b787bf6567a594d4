// The fused CUDA decode kernel (runtime/detail/decode_kernel.cu) against the
// ATen path it replaces, on $SPINDLEKV_TEST_DEVICE: the same cache built
// twice, one decoding with CompressionParameters::fused_decode, one
// without. The GPU tests skip on the CPU and in a build without the kernel
// (CI has neither); scripts/gpu_check.sh runs them on CUDA. The
// FusedDecodeEmulated tests run the kernels' own source on the CPU under an
// emulation of CUDA (simt.h), so CI checks their arithmetic and indexing.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "device_util.h"
#include "emulated_decode_kernel.h"
#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/cache_access.h"
#include "runtime/detail/compressed_cache_impl.h"
#include "runtime/detail/decode_attention.h"
#include "test_util.h"

namespace spindlekv {
namespace {

using testutil::test_device;

#define SKIP_WITHOUT_KERNEL()                                                        \
  if (test_device().is_cpu() || !detail::fused_decode_built()) {                     \
    GTEST_SKIP() << "needs a CUDA build and SPINDLEKV_TEST_DEVICE=cuda (gpu_check)"; \
  }

struct Case {
  std::string name;
  int64_t heads, kv_heads, head_dim;
  CompressionParameters params;
  int64_t sliding_window = 0;
};

CompressionParameters params(CodebookMode mode, double reserve, StorageDtype dtype) {
  CompressionParameters p;
  p.reserve_ratio = reserve;
  p.window = 4;
  p.codebook = mode;
  p.storage_dtype = dtype;
  p.key_threshold = p.value_threshold = 0.3;  // random vectors: some hits, some misses
  return p;
}

std::vector<Case> cases() {
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
std::vector<at::Tensor> decode(const Case& c, bool fused, const std::vector<int64_t>& lengths,
                               int64_t steps, c10::Device device) {
  ModelConfig config = testutil::tiny_config(c.heads, c.kv_heads, c.head_dim);
  CacheGeometry g = config.geometry();
  g.sliding_window = c.sliding_window;
  const auto artifact = testutil::random_artifact(config, 7);
  CompressionParameters p = c.params;
  p.fused_decode = fused;
  CompressedCache cache(g, static_cast<int64_t>(lengths.size()), p, artifact, device);
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
  return out;
}

void expect_same(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].sizes(), want[i].sizes()) << what << ", output " << i;
    EXPECT_TRUE(at::allclose(got[i], want[i], 1e-4, 1e-4))
        << what << ", output " << i << ": max difference "
        << (got[i] - want[i]).abs().max().item<double>();
  }
}

TEST(FusedDecode, MatchesTheAtenPathInEveryModeDtypeAndHeadSize) {
  SKIP_WITHOUT_KERNEL();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const std::vector<int64_t> lengths = {40, 57, 23};
    expect_same(decode(c, true, lengths, 3, test_device()),
                decode(c, false, lengths, 3, test_device()), c.name);
  }
}

TEST(FusedDecode, LongSequencesSplitOverManyBlocksMatchTheAtenPath) {
  SKIP_WITHOUT_KERNEL();
  Case c{"calibrated/bfloat16/d128", 32, 8, 128,
         params(CodebookMode::kCalibrated, 0.5, StorageDtype::kBFloat16)};
  const std::vector<int64_t> lengths = {3000, 700};
  expect_same(decode(c, true, lengths, 2, test_device()),
              decode(c, false, lengths, 2, test_device()), c.name);
}

TEST(FusedDecode, BatchLargerThanOneLaunchMatchesTheAtenPath) {
  SKIP_WITHOUT_KERNEL();
  Case c{"eviction/float16/d64", 8, 2, 64,
         params(CodebookMode::kNone, 0.4, StorageDtype::kFloat16)};
  std::vector<int64_t> lengths;
  for (int64_t b = 0; b < 19; ++b) lengths.push_back(16 + 3 * b);
  expect_same(decode(c, true, lengths, 2, test_device()),
              decode(c, false, lengths, 2, test_device()), c.name);
}

TEST(FusedDecode, NeverTakenOnTheCpu) {
  Case c{"calibrated/float32/d32", 4, 1, 32,
         params(CodebookMode::kCalibrated, 0.4, StorageDtype::kFloat32)};
  const std::vector<int64_t> lengths = {20, 13};
  // On the CPU both settings take the ATen path: the same numbers, bit for bit.
  const auto with = decode(c, true, lengths, 2, c10::kCPU);
  const auto without = decode(c, false, lengths, 2, c10::kCPU);
  ASSERT_EQ(with.size(), without.size());
  for (size_t i = 0; i < with.size(); ++i) EXPECT_TRUE(at::equal(with[i], without[i])) << i;
  ModelConfig config = testutil::tiny_config(4, 1, 32);
  CompressedCache cache(config.geometry(), 1, c.params, testutil::random_artifact(config, 7));
  cache.prefill(0, 0, at::randn({1, 8, 32}), at::randn({1, 8, 32}),
                at::softmax(at::randn({4, 4, 8}), -1));
  const auto& impl = detail::CacheAccess::impl(cache);
  EXPECT_FALSE(detail::fused_decode_applies({&impl.sequences[0][0]}, impl.key_tables[0],
                                            impl.value_tables[0], c10::kCPU, 4, 32));
}

// The kernels' own source on the CPU (emulated_decode_kernel.h), sized for 8
// multiprocessors so that longer sequences split over several blocks.
class FusedDecodeEmulated : public ::testing::Test {
 protected:
  void SetUp() override { detail::set_cpu_decode_launcher(testutil::emulated_decode_launch, 8); }
  void TearDown() override { detail::set_cpu_decode_launcher(nullptr); }

  // The fused and the ATen decode of `c` on the CPU agree, and the fused
  // one made `launches` launches per layer and step.
  void expect_kernel_matches(const Case& c, const std::vector<int64_t>& lengths, int64_t steps,
                             int64_t launches) {
    const int64_t before = testutil::emulated_decode_launches();
    const auto fused = decode(c, true, lengths, steps, c10::kCPU);
    EXPECT_EQ(testutil::emulated_decode_launches() - before, launches * steps * 2)  // 2 layers
        << c.name << ": the fused path did not serve every step";
    expect_same(fused, decode(c, false, lengths, steps, c10::kCPU), c.name);
  }
};

TEST_F(FusedDecodeEmulated, KernelSourceMatchesTheAtenPathInEveryModeDtypeAndHeadSize) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    expect_kernel_matches(c, {40, 57, 23}, 2, 1);
  }
}

TEST_F(FusedDecodeEmulated, KernelSourceSplitOverSeveralBlocksMatchesTheAtenPath) {
  // 8 multiprocessors, 2 sequences x 2 KV heads: 8 splits wanted, about
  // 350 and 150 slots held, so several splits per sequence, some empty.
  Case c{"calibrated/float16/d64", 8, 2, 64,
         params(CodebookMode::kCalibrated, 0.5, StorageDtype::kFloat16)};
  expect_kernel_matches(c, {700, 300}, 2, 1);
}

TEST_F(FusedDecodeEmulated, KernelSourceOverMoreSequencesThanOneLaunchMatchesTheAtenPath) {
  Case c{"eviction/bfloat16/d32", 4, 2, 32,
         params(CodebookMode::kNone, 0.4, StorageDtype::kBFloat16)};
  std::vector<int64_t> lengths;
  for (int64_t b = 0; b < 19; ++b) lengths.push_back(16 + 3 * b);
  expect_kernel_matches(c, lengths, 2, 2);
}

}  // namespace
}  // namespace spindlekv
