#include "capture/attention_statistics.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "test_util.h"

namespace spindlekv {
namespace {

TEST(AttentionStatistics, SimilarPairFractionCountsDistinctPairsAboveThreshold) {
  // Rows 0 and 1 point the same way (different lengths), row 2 is orthogonal,
  // row 3 is zero and has no direction.
  at::Tensor v = at::tensor({1.0f, 0.0f, 3.0f, 0.0f, 0.0f, 1.0f, 0.0f, 0.0f}).view({4, 2});
  // 12 ordered distinct pairs, of which (0,1) and (1,0) are similar.
  EXPECT_DOUBLE_EQ(similar_pair_fraction(v, 0.98), 2.0 / 12.0);
  EXPECT_DOUBLE_EQ(similar_pair_fraction(v.narrow(0, 0, 1), 0.98), 0.0);
}

TEST(AttentionStatistics, ConcentratedAttentionIsRetainedByTopTokens) {
  // One head, window of 2 queries over 10 tokens (8 context + 2 window).
  // Both rows put 0.9 on context token 3 and the rest on the window.
  at::Tensor att = at::zeros({1, 1, 2, 10}, at::kFloat);
  att[0][0][0][3] = 0.9f;
  att[0][0][0][8] = 0.1f;
  att[0][0][1][3] = 0.9f;
  att[0][0][1][9] = 0.1f;
  ForwardCapture::Layer L;
  L.attention = att;
  L.keys_pre_rope = at::randn({1, 1, 10, 4});
  L.values = at::randn({1, 1, 10, 4});
  AttentionStatisticsParameters p;
  p.keep_fractions = {0.0, 0.125, 1.0};
  p.sink_tokens = 4;
  LayerAttentionStatistics s =
      compute_attention_statistics(L.attention, L.keys_pre_rope, L.values, p);
  ASSERT_EQ(s.heads.size(), 1u);
  const auto& h = s.heads[0];
  EXPECT_NEAR(h.retained_mass[0], 0.1, 1e-6);  // nothing of the context kept
  EXPECT_NEAR(h.retained_mass[1], 1.0, 1e-6);  // 1 of 8 tokens: the right one
  EXPECT_NEAR(h.retained_mass[2], 1.0, 1e-6);
  EXPECT_NEAR(h.sink_mass, 0.9, 1e-6);                // token 3 is among the first 4
  EXPECT_NEAR(h.fraction_for_90_percent, 0.1, 1e-6);  // 1 token of 10
  const double entropy = -(0.9 * std::log2(0.9) + 0.1 * std::log2(0.1));
  EXPECT_NEAR(h.entropy_bits, entropy, 1e-6);
  ASSERT_EQ(s.key_pair_fraction.size(), 1u);
}

TEST(AttentionStatistics, MissingCaptureIsNamed) {
  ForwardCapture::Layer L;
  EXPECT_SKV_ERROR(compute_attention_statistics(L.attention, L.keys_pre_rope, L.values, {}),
                   "need captured attention rows");
}

}  // namespace
}  // namespace spindlekv
