#include "capture/attention_statistics.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "model/llama_model.h"
#include "runtime/eviction_policy.h"
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

// The statistics rank context tokens as the runtime's eviction policy does,
// pooling and GQA averaging included: the retained mass at a fraction is the
// window mass on exactly the tokens WindowAttentionPolicy keeps.
TEST(AttentionStatistics, RetainedMassFollowsThePolicysChoiceWhenPooledAndAveraged) {
  at::manual_seed(3);
  const int64_t heads = 4, kv = 2, w = 4, T = 24, context = T - w;
  at::Tensor att = at::softmax(3 * at::randn({1, heads, w, T}), -1);
  AttentionStatisticsParameters p;
  p.keep_fractions = {0.25, 0.5};
  p.pooling_kernel = 3;
  p.gqa = GqaMode::kGroupAverage;
  const LayerAttentionStatistics s =
      compute_attention_statistics(att, at::randn({1, kv, T, 8}), at::randn({1, kv, T, 8}), p);
  const WindowAttentionPolicy policy(p.gqa, p.pooling_kernel);
  for (size_t f = 0; f < p.keep_fractions.size(); ++f) {
    EvictionInput in;
    in.num_kv_heads = kv;
    in.tokens = T;
    in.window = w;
    in.keep_context = static_cast<int64_t>(p.keep_fractions[f] * context);
    in.attention = att[0];
    const at::Tensor kept = policy.select(in).to(at::kFloat);              // [heads, T]
    const at::Tensor mass = (att[0] * kept.unsqueeze(1)).sum(-1).mean(1);  // [heads]
    for (int64_t h = 0; h < heads; ++h) {
      EXPECT_NEAR(s.heads[h].retained_mass[f], mass[h].item<double>(), 1e-6) << h << " " << f;
    }
  }
}

}  // namespace
}  // namespace spindlekv
