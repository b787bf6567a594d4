// Attention and similarity statistics of one layer, computed from a forward
// pass's capture: what eviction (stage 1) and the codebook (stage 2) of
// SpindleKV rely on, and what layer budgets are calibrated from.
//
// Inputs (a forward pass's ForwardCapture::Layer holds them):
//   attention      [batch, heads, window, tokens] float32 (the last `window` queries)
//   keys_pre_rope  [batch, kv_heads, tokens, head_dim] float32
//   values         [batch, kv_heads, tokens, head_dim] float32
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "runtime/eviction_policy.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {

struct AttentionStatisticsParameters {
  /// Kept fractions of the context at which the retained-mass curve is read.
  std::vector<double> keep_fractions = {0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3,
                                        0.4,  0.5,  0.6,  0.7, 0.8,  0.9, 1.0};
  int64_t sink_tokens = 4;                      ///< "first tokens" whose attention mass is reported
  double key_threshold = paper::kKeyThreshold;  ///< cosine threshold of key pairs (paper: theta_K)
  double value_threshold =
      paper::kValueThreshold;  ///< cosine threshold of value pairs (paper: theta_V)
  /// Pair similarities use at most this many tokens (evenly strided) per
  /// sequence: the pair count grows quadratically.
  int64_t max_pair_tokens = 512;
  /// How context tokens are ranked for retained_mass: the runtime's
  /// window_scores with this GQA handling and pooling (the paper: repeat, 1).
  GqaMode gqa = GqaMode::kRepeat;
  int64_t pooling_kernel = 1;
};

/// Per query head, averaged over the batch and the window's query rows.
struct HeadAttentionStatistics {
  /// retained_mass[i]: attention mass (of the window queries) on the context
  /// tokens kept when the top keep_fractions[i] of the context are chosen as
  /// the runtime chooses them (window_scores, importance_order). The window
  /// itself is not counted as context; its mass is always retained.
  std::vector<double> retained_mass;
  double sink_mass = 0;     ///< mass on the first sink_tokens positions
  double entropy_bits = 0;  ///< entropy of a query row's distribution
  /// Smallest fraction of all tokens that holds 90% of a row's mass (per row, oracle).
  double fraction_for_90_percent = 0;
};

struct LayerAttentionStatistics {
  std::vector<HeadAttentionStatistics> heads;  ///< one per query head
  /// Per KV head: fraction of distinct token pairs whose pre-RoPE key (value)
  /// directions have cosine similarity above the threshold.
  std::vector<double> key_pair_fraction;
  std::vector<double> value_pair_fraction;
};

/// Statistics of one captured layer; throws kInvalidInput naming the
/// tensor that is missing.
LayerAttentionStatistics compute_attention_statistics(const at::Tensor& attention,
                                                      const at::Tensor& keys_pre_rope,
                                                      const at::Tensor& values,
                                                      const AttentionStatisticsParameters& params);

/// Fraction of distinct pairs among the rows of `vectors` [n, dim] whose
/// cosine similarity exceeds `threshold`. Zero-norm rows have no direction
/// and are counted as dissimilar to everything.
double similar_pair_fraction(const at::Tensor& vectors, double threshold);

}  // namespace spindlekv
