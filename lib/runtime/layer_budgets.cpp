#include "runtime/layer_budgets.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace spindlekv {

double context_reserve_ratio(double reserve_ratio, int64_t tokens, int64_t window) {
  SKV_CHECK(reserve_ratio >= 0 && reserve_ratio <= 1, "reserve ratio must lie in [0, 1], got ",
            reserve_ratio);
  const int64_t context = tokens - window;
  if (context <= 0) return 1.0;
  const double rc = (reserve_ratio * static_cast<double>(tokens) - static_cast<double>(window)) /
                    static_cast<double>(context);
  return std::clamp(rc, 0.0, 1.0);
}

std::vector<double> pyramid_keep_fractions(double rc, int64_t num_layers, double beta) {
  SKV_CHECK_GT(num_layers, 0, "pyramid needs at least one layer");
  SKV_CHECK(beta >= 0 && beta < 1, "pyramid beta must lie in [0, 1), got ", beta);
  SKV_CHECK(rc >= 0 && rc <= 1, "context reserve ratio must lie in [0, 1], got ", rc);
  const double alpha = (1 + beta) / 2;
  double first = rc, last = rc;
  if (rc > alpha) {
    first = 1;
    last = 2 * rc - 1;  // the paper prints 1 - 2 r_c, which cannot average to r_c
  } else if (rc > beta) {
    first = 2 * rc - beta;
    last = beta;
  }
  std::vector<double> out(num_layers, rc);
  if (num_layers == 1) return out;
  for (int64_t i = 0; i < num_layers; ++i) {
    const double t = static_cast<double>(i) / static_cast<double>(num_layers - 1);
    out[i] = std::clamp(first + (last - first) * t, 0.0, 1.0);
  }
  return out;
}

std::vector<double> BudgetTable::at(double rc) const {
  SKV_CHECK(!context_ratios.empty(), "budget table is empty");
  if (rc <= context_ratios.front()) return fractions.front();
  if (rc >= context_ratios.back()) return fractions.back();
  const auto hi = std::upper_bound(context_ratios.begin(), context_ratios.end(), rc);
  const size_t j = static_cast<size_t>(hi - context_ratios.begin());
  const double x0 = context_ratios[j - 1], x1 = context_ratios[j];
  const double t = x1 > x0 ? (rc - x0) / (x1 - x0) : 0.0;
  std::vector<double> out(fractions[j].size());
  for (size_t l = 0; l < out.size(); ++l) {
    out[l] = fractions[j - 1][l] + (fractions[j][l] - fractions[j - 1][l]) * t;
  }
  return out;
}

void BudgetTable::validate(int64_t num_layers) const {
  SKV_CHECK(!context_ratios.empty(), "budget table is empty");
  SKV_CHECK_EQ(context_ratios.size(), fractions.size(), "budget table: ratios and rows differ");
  for (size_t i = 0; i < context_ratios.size(); ++i) {
    SKV_CHECK(context_ratios[i] >= 0 && context_ratios[i] <= 1, "budget table: ratio ", i, " is ",
              context_ratios[i], ", outside [0, 1]");
    SKV_CHECK(i == 0 || context_ratios[i] > context_ratios[i - 1],
              "budget table: ratios must increase, ratio ", i, " is ", context_ratios[i]);
    SKV_CHECK_EQ(static_cast<int64_t>(fractions[i].size()), num_layers, "budget table: row ", i,
                 " has the wrong layer count");
    for (size_t l = 0; l < fractions[i].size(); ++l) {
      const double f = fractions[i][l];
      SKV_CHECK(std::isfinite(f) && f >= 0 && f <= 1, "budget table: ratio ", context_ratios[i],
                " layer ", l, " keeps ", f, ", outside [0, 1]");
    }
  }
}

int64_t kept_context_tokens(double fraction, int64_t context_tokens) {
  if (context_tokens <= 0) return 0;
  // The epsilon keeps 0.3 * 10 from flooring to 2 through rounding.
  const double k = std::floor(fraction * static_cast<double>(context_tokens) + 1e-9);
  return std::clamp<int64_t>(static_cast<int64_t>(k), 0, context_tokens);
}

}  // namespace spindlekv
