#include "eval/statistics.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace spindlekv {
namespace {

TEST(Statistics, WilsonIntervalMatchesAHandComputedCase) {
  // 8 of 10 at z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71682, half
  // width 1.96 sqrt(0.016 + 0.0096040) / 1.38416 = 0.22659.
  const auto [lo, hi] = wilson_interval(8, 10);
  EXPECT_NEAR(lo, 0.4902, 1e-4);
  EXPECT_NEAR(hi, 0.9433, 1e-4);
}

TEST(Statistics, WilsonIntervalStaysInsideZeroAndOneAtTheEdges) {
  const auto [lo0, hi0] = wilson_interval(0, 80);
  EXPECT_DOUBLE_EQ(lo0, 0.0);
  EXPECT_NEAR(hi0, 0.0458, 1e-4);  // z^2 / (n + z^2)
  const auto [lo1, hi1] = wilson_interval(80, 80);
  EXPECT_NEAR(lo1, 1 - 0.0458, 1e-4);
  EXPECT_DOUBLE_EQ(hi1, 1.0);
  EXPECT_SKV_ERROR(wilson_interval(3, 2), "outside");
}

TEST(Statistics, McNemarCountsOnlyDiscordantPairs) {
  // 3 prompts only a solved, 0 only b: p = 2 * (1/2)^3 = 0.25.
  EXPECT_NEAR(mcnemar_exact_p({1, 1, 1, 1, 0}, {0, 0, 0, 1, 0}), 0.25, 1e-12);
  // 6 vs 1 discordant: 2 * (1 + 7) / 128 = 0.125.
  std::vector<int> a(20, 1), b(20, 1);
  for (int i = 0; i < 6; ++i) b[i] = 0;
  a[10] = 0;
  EXPECT_NEAR(mcnemar_exact_p(a, b), 0.125, 1e-12);
  // Concordant prompts change nothing; no discordance gives 1.
  EXPECT_DOUBLE_EQ(mcnemar_exact_p({1, 0, 1}, {1, 0, 1}), 1.0);
  EXPECT_SKV_ERROR(mcnemar_exact_p({1}, {1, 0}), "different lengths");
}

}  // namespace
}  // namespace spindlekv
