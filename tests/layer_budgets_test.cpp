#include "runtime/layer_budgets.h"

#include <gtest/gtest.h>

#include <numeric>

#include "test_util.h"

namespace spindlekv {
namespace {

double mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

TEST(LayerBudgets, ContextRatioExcludesTheWindow) {
  // r = 0.2 of 1000 tokens = 200 kept; 32 are the window, 168 of 968 context.
  EXPECT_NEAR(context_reserve_ratio(0.2, 1000, 32), 168.0 / 968.0, 1e-12);
  EXPECT_EQ(context_reserve_ratio(0.01, 1000, 32), 0.0);  // the window alone exceeds r
  EXPECT_EQ(context_reserve_ratio(0.5, 20, 32), 1.0);     // everything is window
  EXPECT_SKV_ERROR(context_reserve_ratio(1.5, 100, 8), "reserve ratio");
}

TEST(LayerBudgets, PyramidMiddleRegimeRunsFromTwoRcMinusBetaToBeta) {
  const auto f = pyramid_keep_fractions(0.3, 5, 0.05);
  EXPECT_NEAR(f.front(), 0.55, 1e-12);
  EXPECT_NEAR(f.back(), 0.05, 1e-12);
  EXPECT_NEAR(f[2], 0.30, 1e-12);
  EXPECT_NEAR(mean(f), 0.3, 1e-12);
}

TEST(LayerBudgets, PyramidHighRegimeKeepsLayerZeroWhole) {
  const auto f = pyramid_keep_fractions(0.8, 4, 0.05);
  EXPECT_NEAR(f.front(), 1.0, 1e-12);
  EXPECT_NEAR(f.back(), 0.6, 1e-12);  // 2 r_c - 1, not the paper's misprinted 1 - 2 r_c
  EXPECT_NEAR(mean(f), 0.8, 1e-12);
}

TEST(LayerBudgets, PyramidBelowBetaIsUniform) {
  for (double x : pyramid_keep_fractions(0.03, 6, 0.05)) EXPECT_NEAR(x, 0.03, 1e-12);
  EXPECT_EQ(pyramid_keep_fractions(0.4, 1, 0.05), std::vector<double>{0.4});
}

TEST(LayerBudgets, TableInterpolatesBetweenRatios) {
  BudgetTable t;
  t.context_ratios = {0.1, 0.3};
  t.fractions = {{0.2, 0.0}, {0.4, 0.2}};
  t.validate(2);
  const auto f = t.at(0.2);
  EXPECT_NEAR(f[0], 0.3, 1e-12);
  EXPECT_NEAR(f[1], 0.1, 1e-12);
  EXPECT_EQ(t.at(0.05), t.fractions.front());
  EXPECT_EQ(t.at(0.9), t.fractions.back());
}

TEST(LayerBudgets, TableValidationNamesTheBadEntry) {
  BudgetTable t;
  t.context_ratios = {0.3, 0.1};
  t.fractions = {{0.2}, {0.1}};
  EXPECT_SKV_ERROR(t.validate(1), "ratios must increase");
  t.context_ratios = {0.1, 0.3};
  t.fractions = {{0.2}, {1.5}};
  EXPECT_SKV_ERROR(t.validate(1), "keeps 1.5");
  EXPECT_SKV_ERROR(t.validate(2), "layer count");
}

TEST(LayerBudgets, KeptTokensFloorWithoutRoundingLoss) {
  EXPECT_EQ(kept_context_tokens(0.3, 10), 3);
  EXPECT_EQ(kept_context_tokens(0.29, 10), 2);
  EXPECT_EQ(kept_context_tokens(1.0, 7), 7);
  EXPECT_EQ(kept_context_tokens(0.5, 0), 0);
}

}  // namespace
}  // namespace spindlekv
