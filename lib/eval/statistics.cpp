#include "eval/statistics.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"

namespace spindlekv {

std::pair<double, double> wilson_interval(int64_t successes, int64_t n, double z) {
  SKV_CHECK(successes >= 0 && successes <= n, "successes ", successes, " outside [0, ", n, "]");
  if (n == 0) return {0.0, 1.0};
  const double N = static_cast<double>(n), p = successes / N, z2 = z * z;
  const double centre = (p + z2 / (2 * N)) / (1 + z2 / N);
  const double half = z * std::sqrt(p * (1 - p) / N + z2 / (4 * N * N)) / (1 + z2 / N);
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

namespace {

// Two-sided exact binomial test of `only_a` against `only_b` at p = 1/2.
double two_sided_binomial_p(int64_t only_a, int64_t only_b) {
  const int64_t n = only_a + only_b, k = std::min(only_a, only_b);
  if (n == 0) return 1.0;
  // P[X <= k] for X ~ Binomial(n, 1/2), summed in log space.
  double tail = 0;
  for (int64_t i = 0; i <= k; ++i) {
    tail += std::exp(std::lgamma(n + 1.0) - std::lgamma(i + 1.0) - std::lgamma(n - i + 1.0) -
                     n * std::log(2.0));
  }
  return std::min(1.0, 2 * tail);
}

}  // namespace

double mcnemar_exact_p(const std::vector<int>& a, const std::vector<int>& b) {
  SKV_CHECK_EQ(a.size(), b.size(), "paired outcomes of different lengths");
  int64_t only_a = 0, only_b = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    only_a += (a[i] != 0 && b[i] == 0);
    only_b += (a[i] == 0 && b[i] != 0);
  }
  return two_sided_binomial_p(only_a, only_b);
}

double sign_test_exact_p(const std::vector<double>& a, const std::vector<double>& b) {
  SKV_CHECK_EQ(a.size(), b.size(), "paired values of different lengths");
  int64_t below = 0, above = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    below += a[i] < b[i];
    above += a[i] > b[i];
  }
  return two_sided_binomial_p(below, above);
}

std::pair<double, double> bootstrap_mean_interval(const std::vector<double>& x, uint64_t seed,
                                                  int64_t resamples) {
  SKV_CHECK(!x.empty(), "bootstrap interval of no values");
  SKV_CHECK_GT(resamples, 0, "bootstrap resamples");
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
  std::vector<double> means(static_cast<size_t>(resamples));
  for (double& m : means) {
    double sum = 0;
    for (size_t i = 0; i < x.size(); ++i) sum += x[pick(gen)];
    m = sum / static_cast<double>(x.size());
  }
  std::sort(means.begin(), means.end());
  const auto at = [&](double q) {
    return means[std::min(means.size() - 1, static_cast<size_t>(q * (means.size() - 1) + 0.5))];
  };
  return {at(0.025), at(0.975)};
}

}  // namespace spindlekv
