// The fused CUDA decode kernels (runtime/detail/decode_kernels.cuh) against
// the ATen path they replace, on $SPINDLEKV_TEST_DEVICE: the same cache
// built twice, one decoding with CompressionParameters::fused_decode, one
// without. The GPU tests skip on the CPU and in a build without the kernels
// (CI has neither); scripts/gpu_check.sh runs them on CUDA.
// fused_decode_emulated_test.cpp runs the same kernels' source on the CPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "device_util.h"
#include "fused_decode_cases.h"
#include "runtime/detail/cache_access.h"
#include "runtime/detail/compressed_cache_impl.h"
#include "runtime/detail/decode_attention.h"

namespace spindlekv {
namespace {

using namespace testutil;  // NOLINT: the shared cases and checks

#define SKIP_WITHOUT_KERNEL()                                                        \
  if (test_device().is_cpu() || !detail::fused_decode_built()) {                     \
    GTEST_SKIP() << "needs a CUDA build and SPINDLEKV_TEST_DEVICE=cuda (gpu_check)"; \
  }

TEST(FusedDecode, MatchesTheAtenPathInEveryModeDtypeAndHeadSize) {
  SKIP_WITHOUT_KERNEL();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const std::vector<int64_t> lengths = {40, 57, 23};
    std::vector<at::Tensor> fused;
    {
      KernelCalls calls;  // the fused path served every step of both layers
      fused = decode(c, true, lengths, 3, test_device());
      EXPECT_EQ(calls.attention(), 3 * 2);
      EXPECT_EQ(calls.append(), append_launches(lengths.size()) * 3 * 2);
    }
    expect_same(fused, decode(c, false, lengths, 3, test_device()), c.name);
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

}  // namespace
}  // namespace spindlekv
