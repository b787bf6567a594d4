// Uncertainty of the evaluation's accuracies: Wilson score intervals for a
// proportion and the exact McNemar test for two methods scored on the same
// prompts (../shared/EVALUATION.md).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace spindlekv {

/// The Wilson score interval of `successes` out of `n` at normal quantile `z`
/// (1.96: 95%); {0, 1} when n is 0.
std::pair<double, double> wilson_interval(int64_t successes, int64_t n, double z = 1.96);

/// Two-sided exact McNemar test on paired 0/1 outcomes of two methods over
/// the same prompts: with b prompts that only `a` got right and c that only
/// `b` got right, p = min(1, 2 P[Binomial(b + c, 1/2) <= min(b, c)]); 1 when
/// they never disagree. Throws kInvalidInput when the lengths differ.
double mcnemar_exact_p(const std::vector<int>& a, const std::vector<int>& b);

}  // namespace spindlekv
