// Uncertainty of the evaluation's scores: Wilson score intervals for a
// proportion and the exact McNemar test for two methods scored on the same
// prompts; for continuous per-prompt values (KL), the exact sign test and a
// bootstrap interval of the mean (../shared/EVALUATION.md).
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

/// Two-sided exact sign test on paired values of two methods over the same
/// prompts (ties dropped): the McNemar p of "a below b" against "b below a".
double sign_test_exact_p(const std::vector<double>& a, const std::vector<double>& b);

/// Percentile bootstrap 95% interval of the mean of `x` (`resamples` draws
/// with replacement from a generator seeded with `seed`, so it is the same on
/// every run); {x, x} for one value. Throws kInvalidInput when empty.
std::pair<double, double> bootstrap_mean_interval(const std::vector<double>& x, uint64_t seed = 1,
                                                  int64_t resamples = 4000);

}  // namespace spindlekv
