#include "runtime/eviction_policy.h"

#include "runtime/baseline_policies.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "test_util.h"

namespace spindlekv {
namespace {

std::vector<int64_t> kept_tokens(const at::Tensor& row) {
  at::Tensor idx = row.nonzero().view({-1}).contiguous();
  return {idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel()};
}

// Two query heads over one KV head, 10 tokens, window 2: head 0 looks at
// tokens 1 and 5, head 1 at 2 and 7, both a little at 3.
EvictionInput two_head_pattern() {
  EvictionInput in;
  in.num_layers = 1;
  in.num_kv_heads = 1;
  in.tokens = 10;
  in.window = 2;
  in.keep_context = 2;
  at::Tensor att = at::full({2, 2, 10}, 0.01);
  for (int64_t r = 0; r < 2; ++r) {
    att[0][r][1] = 0.4, att[0][r][5] = 0.3, att[0][r][3] = 0.2;
    att[1][r][2] = 0.4, att[1][r][7] = 0.35, att[1][r][3] = 0.2;
  }
  in.attention = att;
  return in;
}

TEST(WindowAttentionPolicy, RepeatKeepsEachHeadsOwnTopTokensAndTheWindow) {
  at::Tensor kept = WindowAttentionPolicy(GqaMode::kRepeat).select(two_head_pattern());
  EXPECT_EQ(kept_tokens(kept[0]), (std::vector<int64_t>{1, 5, 8, 9}));
  EXPECT_EQ(kept_tokens(kept[1]), (std::vector<int64_t>{2, 7, 8, 9}));
}

TEST(WindowAttentionPolicy, GroupAverageKeepsOneSetForTheGroup) {
  // Averaged: 1 -> 0.205, 2 -> 0.205, 3 -> 0.2, 5 -> 0.155, 7 -> 0.18.
  at::Tensor kept = WindowAttentionPolicy(GqaMode::kGroupAverage).select(two_head_pattern());
  EXPECT_EQ(kept_tokens(kept[0]), (std::vector<int64_t>{1, 2, 8, 9}));
  EXPECT_TRUE(at::equal(kept[0], kept[1]));
}

TEST(WindowAttentionPolicy, PoolingSpreadsImportanceToNeighbours) {
  EvictionInput in = two_head_pattern();
  in.keep_context = 3;
  at::Tensor kept = WindowAttentionPolicy(GqaMode::kRepeat, 3).select(in);
  // Pooled scores of head 0: token 0,1,2 get 0.4; ties go to the earlier token.
  EXPECT_EQ(kept_tokens(kept[0]), (std::vector<int64_t>{0, 1, 2, 8, 9}));
  EXPECT_SKV_ERROR(WindowAttentionPolicy(GqaMode::kRepeat, 4), "odd");
}

TEST(WindowAttentionPolicy, ImportanceIsTheWindowMeanOfAttention) {
  at::Tensor imp = window_importance(two_head_pattern());
  EXPECT_EQ(imp.sizes(), (std::vector<int64_t>{2, 8}));
  EXPECT_NEAR(imp[0][1].item<double>(), 0.4, 1e-6);
  EXPECT_NEAR(imp[1][7].item<double>(), 0.35, 1e-6);
}

TEST(FullCachePolicy, KeepsEverything) {
  EXPECT_TRUE(FullCachePolicy().select(two_head_pattern()).all().item<bool>());
}

}  // namespace
}  // namespace spindlekv

namespace spindlekv {
namespace {

TEST(StreamingLlmPolicy, KeepsSinksAndTheMostRecentTokens) {
  EvictionInput in = two_head_pattern();  // 10 tokens, window 2 (tokens 8, 9)
  in.keep_context = 5;
  at::Tensor kept = StreamingLlmPolicy(2).select(in);
  EXPECT_EQ(kept_tokens(kept[0]), (std::vector<int64_t>{0, 1, 5, 6, 7, 8, 9}));
  EXPECT_TRUE(at::equal(kept[0], kept[1]));
  in.keep_context = 1;  // budget smaller than the sinks: the first token only
  EXPECT_EQ(kept_tokens(StreamingLlmPolicy(4).select(in)[0]), (std::vector<int64_t>{0, 8, 9}));
}

TEST(H2oPolicy, SplitsTheBudgetBetweenRecentTokensAndHeavyHitters) {
  // Every query row (not just the window) votes: token 2 is the heavy hitter
  // of head 0 overall, token 4 of head 1.
  EvictionInput in = two_head_pattern();
  at::Tensor att = at::full({2, 10, 10}, 0.01);
  for (int64_t r = 0; r < 10; ++r) att[0][r][2] = 0.5, att[1][r][4] = 0.5, att[0][r][3] = 0.2;
  in.attention = att;
  in.keep_context = 4;  // 2 recent (6, 7) + 2 heavy
  H2oPolicy h2o;
  EXPECT_EQ(h2o.attention_rows(10, 2), 10);
  at::Tensor kept = h2o.select(in);
  EXPECT_EQ(kept_tokens(kept[0]), (std::vector<int64_t>{2, 3, 6, 7, 8, 9}));
  EXPECT_EQ(kept_tokens(kept[1]), (std::vector<int64_t>{0, 4, 6, 7, 8, 9}));  // tie: earliest
}

TEST(WindowAttentionPolicy, GroupAverageDiffersFromRepeatWhenAGroupsHeadsDisagree) {
  // One KV head shared by both query heads (a group of 2): per head, head 0
  // keeps token 1 and head 1 token 3; averaged, token 1 (0.6) beats 3 (0.35).
  EvictionInput in = two_head_pattern();
  in.keep_context = 1;
  at::Tensor att = at::full({2, 2, 10}, 0.0);
  for (int64_t r = 0; r < 2; ++r) {
    att[0][r][1] = 0.9, att[0][r][3] = 0.1;
    att[1][r][1] = 0.3, att[1][r][3] = 0.6;
  }
  in.attention = att;
  at::Tensor repeat = WindowAttentionPolicy(GqaMode::kRepeat).select(in);
  at::Tensor mean = WindowAttentionPolicy(GqaMode::kGroupAverage).select(in);
  EXPECT_EQ(kept_tokens(repeat[0]), (std::vector<int64_t>{1, 8, 9}));
  EXPECT_EQ(kept_tokens(repeat[1]), (std::vector<int64_t>{3, 8, 9}));
  EXPECT_EQ(kept_tokens(mean[0]), (std::vector<int64_t>{1, 8, 9}));
  EXPECT_EQ(kept_tokens(mean[1]), (std::vector<int64_t>{1, 8, 9}));
}

TEST(H2oPolicy, GroupAverageChoosesOneSetPerKvHead) {
  // Head 0's heavy hitter is token 2 (0.5), head 1's token 4 (0.3); averaged
  // over the group, token 2 (0.25 + 0.005) wins for both.
  EvictionInput in = two_head_pattern();
  at::Tensor att = at::full({2, 10, 10}, 0.01);
  for (int64_t r = 0; r < 10; ++r) att[0][r][2] = 0.5, att[1][r][4] = 0.3;
  in.attention = att;
  in.keep_context = 2;  // 1 recent (7) + 1 heavy
  at::Tensor repeat = H2oPolicy(0.5, GqaMode::kRepeat).select(in);
  at::Tensor mean = H2oPolicy(0.5, GqaMode::kGroupAverage).select(in);
  EXPECT_EQ(kept_tokens(repeat[1]), (std::vector<int64_t>{4, 7, 8, 9}));
  EXPECT_EQ(kept_tokens(mean[0]), (std::vector<int64_t>{2, 7, 8, 9}));
  EXPECT_EQ(kept_tokens(mean[1]), (std::vector<int64_t>{2, 7, 8, 9}));
  EXPECT_EQ(H2oPolicy(0.5, GqaMode::kGroupAverage).name(), "h2o-mean");
}

}  // namespace
}  // namespace spindlekv
