// The CPU emulation of CUDA (tests/simt.h) that runs the fused decode
// kernels in CI: indices, __syncthreads, __shfl_xor_sync and deadlocks.
#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "simt.h"

namespace spindlekv {
namespace {

TEST(Simt, EveryThreadOfEveryBlockRunsOnce) {
  std::multiset<std::tuple<unsigned, unsigned, unsigned, unsigned, unsigned, unsigned>> seen;
  simt::run(
      [&] {
        EXPECT_EQ(blockDim.x, 4u);
        EXPECT_EQ(gridDim.y, 2u);
        seen.insert({blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z});
      },
      dim3(3, 2, 1), dim3(4, 2, 3));
  ASSERT_EQ(seen.size(), 3u * 2 * 4 * 2 * 3);
  for (unsigned bx = 0; bx < 3; ++bx)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned tx = 0; tx < 4; ++tx)
        for (unsigned ty = 0; ty < 2; ++ty)
          for (unsigned tz = 0; tz < 3; ++tz)
            EXPECT_EQ(seen.count({bx, by, 0u, tx, ty, tz}), 1u) << bx << by << tx << ty << tz;
}

TEST(Simt, SyncThreadsMakesEveryThreadsSharedWriteVisible) {
  std::vector<int> read(96, -1);
  simt::run(
      [&] {
        __shared__ int shared[96];
        const int t = static_cast<int>(threadIdx.x);
        shared[t] = 10 * t;
        __syncthreads();
        read[t] = shared[(t + 37) % 96];  // written by a thread of another warp
        __syncthreads();
        shared[t] = -1;  // the next block starts from scratch
      },
      dim3(2), dim3(96));
  for (int t = 0; t < 96; ++t) EXPECT_EQ(read[t], 10 * ((t + 37) % 96)) << t;
}

TEST(Simt, ButterflyShuffleSumsEachWarp) {
  std::vector<float> sum(64);
  simt::run(
      [&] {
        const int t = static_cast<int>(threadIdx.x);
        float v = static_cast<float>(t);
        for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
        sum[t] = v;
      },
      dim3(1), dim3(64));
  for (int t = 0; t < 32; ++t) EXPECT_EQ(sum[t], 496.f) << t;    // 0 + ... + 31
  for (int t = 32; t < 64; ++t) EXPECT_EQ(sum[t], 1520.f) << t;  // 32 + ... + 63
}

TEST(Simt, HalfWarpsShuffleOnTheirOwnWhateverTheOtherHalfDoes) {
  // As decode_partial at head_dim 32: 16 lanes per group, the two halves of a
  // warp looping a different number of times.
  std::vector<float> last(32);
  simt::run(
      [&] {
        const unsigned t = threadIdx.x, half = t / 16;
        const unsigned mask = 0xffffu << (half * 16);
        float v = 0.f;
        for (unsigned round = 0; round < 3 + 2 * half; ++round) {
          v = static_cast<float>(t % 16 + round);
          for (int off = 8; off > 0; off /= 2) v += __shfl_xor_sync(mask, v, off);
        }
        last[t] = v;
      },
      dim3(1), dim3(32));
  // Sum over the group of (lane + last round): 120 + 16 * round.
  for (int t = 0; t < 16; ++t) EXPECT_EQ(last[t], 120.f + 16 * 2) << t;
  for (int t = 16; t < 32; ++t) EXPECT_EQ(last[t], 120.f + 16 * 4) << t;
}

TEST(Simt, ThreadSkippingABarrierIsADeadlock) {
  EXPECT_THROW(simt::run(
                   [] {
                     if (threadIdx.x == 5) return;
                     __syncthreads();
                   },
                   dim3(1), dim3(8)),
               std::runtime_error);
  EXPECT_THROW(simt::run(
                   [] {
                     float v = 1.f;
                     if (threadIdx.x != 3) v = __shfl_xor_sync(0xffffffffu, v, 1);
                     (void)v;
                   },
                   dim3(1), dim3(32)),
               std::runtime_error);
  // The emulation is usable again afterwards.
  int ran = 0;
  simt::run([&] { ++ran; }, dim3(2), dim3(3));
  EXPECT_EQ(ran, 6);
}

TEST(Simt, BarrierReachedFromTwoCallSitesIsRefused) {
  // Each thread passes one barrier, but the block does not agree on which.
  EXPECT_THROW(simt::run(
                   [] {
                     if (threadIdx.x < 4) {
                       __syncthreads();
                     } else {
                       __syncthreads();
                     }
                   },
                   dim3(1), dim3(8)),
               std::logic_error);
}

TEST(Simt, ShuffleOutsideItsMaskAndBadShapesAreRefused) {
  EXPECT_THROW(simt::run([] { (void)__shfl_xor_sync(0xffffu, 1.f, 16); }, dim3(1), dim3(16)),
               std::logic_error);
  EXPECT_THROW(simt::run([] {}, dim3(1), dim3(2048)), std::invalid_argument);
  EXPECT_THROW(simt::run([] {}, dim3(0), dim3(32)), std::invalid_argument);
  EXPECT_THROW(__syncthreads(), std::logic_error);  // outside a launch
}

}  // namespace
}  // namespace spindlekv
