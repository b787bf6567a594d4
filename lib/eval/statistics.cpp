#include "eval/statistics.h"

#include <algorithm>
#include <cmath>

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

double mcnemar_exact_p(const std::vector<int>& a, const std::vector<int>& b) {
  SKV_CHECK_EQ(a.size(), b.size(), "paired outcomes of different lengths");
  int64_t only_a = 0, only_b = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    only_a += (a[i] != 0 && b[i] == 0);
    only_b += (a[i] == 0 && b[i] != 0);
  }
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

}  // namespace spindlekv
