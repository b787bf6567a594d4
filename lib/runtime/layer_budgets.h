// Per-layer eviction budgets: how many context tokens each layer keeps.
//
// SpindleKV (after PyramidKV) keeps a fraction r of a sequence's l tokens. The
// last l_w tokens (the observation window) are always kept, so the context
// (the other l_c = l - l_w tokens) keeps r_c = (r l - l_w) / l_c of itself on
// average over layers, distributed by depth: a linear pyramid, or a
// calibrated allocation stored in the artifact as a table over r_c.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/paper_defaults.h"

namespace spindlekv {

/// r_c = (r * tokens - window) / (tokens - window), clamped to [0, 1]; 1 when
/// the whole sequence fits in the window.
double context_reserve_ratio(double reserve_ratio, int64_t tokens, int64_t window);

/// The paper's linear pyramid. For context ratio r_c and `num_layers` layers:
/// with alpha = (1 + beta) / 2, layer 0 keeps 2 r_c - beta and the last layer
/// beta when beta < r_c <= alpha; layer 0 keeps 1 and the last 2 r_c - 1 when
/// r_c > alpha; every layer keeps r_c when r_c <= beta (no room for a slope).
/// Layers in between are interpolated linearly; the mean is r_c.
std::vector<double> pyramid_keep_fractions(double context_ratio, int64_t num_layers,
                                           double beta = paper::kPyramidBeta);

/// Per-layer keep fractions tabulated over context ratios (the artifact's form
/// of a calibrated allocation).
struct BudgetTable {
  std::vector<double> context_ratios;          ///< increasing, in [0, 1]
  std::vector<std::vector<double>> fractions;  ///< [ratio][layer]
  /// Fractions for `context_ratio`, interpolated linearly between the two
  /// nearest tabulated ratios (clamped at the ends).
  std::vector<double> at(double context_ratio) const;
  /// Throws kInvalidInput if the table is empty, unsorted, ragged or out of [0, 1].
  void validate(int64_t num_layers) const;
};

/// Context tokens a layer keeps: floor(fraction * context_tokens), at least 0.
int64_t kept_context_tokens(double fraction, int64_t context_tokens);

}  // namespace spindlekv
