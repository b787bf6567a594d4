#include "eval/statistics.h"

#include <gtest/gtest.h>

#include <cmath>

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

TEST(Statistics, SignTestDropsTiesAndCountsEachSide) {
  // 12 of 12 contexts lower: p = 2 / 4096.
  std::vector<double> a(12, 0.01), b(12, 0.05);
  EXPECT_NEAR(sign_test_exact_p(a, b), 2.0 / 4096, 1e-15);
  EXPECT_NEAR(sign_test_exact_p(b, a), 2.0 / 4096, 1e-15);
  // Ties are dropped: 3 lower, 0 higher, 2 equal: p = 0.25.
  EXPECT_NEAR(sign_test_exact_p({1, 1, 1, 2, 2}, {2, 2, 2, 2, 2}), 0.25, 1e-12);
  EXPECT_DOUBLE_EQ(sign_test_exact_p({1, 2}, {1, 2}), 1.0);
  EXPECT_SKV_ERROR(sign_test_exact_p({1}, {1, 2}), "different lengths");
}

TEST(Statistics, BootstrapIntervalHoldsTheMeanAndIsReproducible) {
  std::vector<double> x;
  for (int i = 0; i < 40; ++i) x.push_back(i % 5);  // mean 2, sd ~1.41
  const auto [lo, hi] = bootstrap_mean_interval(x, 3);
  EXPECT_LT(lo, 2.0);
  EXPECT_GT(hi, 2.0);
  // About 1.96 standard errors either side (sd / sqrt(40) ~ 0.22).
  EXPECT_NEAR(hi - lo, 2 * 1.96 * std::sqrt(2.0 / 40), 0.15);
  EXPECT_EQ(bootstrap_mean_interval(x, 3), bootstrap_mean_interval(x, 3));
  EXPECT_EQ(bootstrap_mean_interval({0.5}), std::make_pair(0.5, 0.5));
  EXPECT_SKV_ERROR(bootstrap_mean_interval({}), "no values");
}

}  // namespace
}  // namespace spindlekv
