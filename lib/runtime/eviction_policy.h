// Stage 1 of SpindleKV, and the plug-in point for eviction baselines: which
// tokens of a prefilled sequence each query head keeps in one layer.
//
// Shapes, float32 on any device:
//   attention [heads, rows, tokens]: attention probabilities of the
//     sequence's last `rows` queries over all its tokens (rows >= window;
//     a policy asks for more through attention_rows())
//   kept [heads, tokens] bool: the policy's answer
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace spindlekv {

struct EvictionInput {
  int64_t layer = 0;
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t tokens = 0;        ///< l
  int64_t window = 0;        ///< l_w: the last l_w tokens are always kept
  int64_t keep_context = 0;  ///< context tokens each query head may keep (the layer budget)
  at::Tensor attention;      ///< [heads, rows, tokens], the last rows of the prefill
};

/// How the tokens of one KV head are chosen when h_n query heads share it.
enum class GqaMode {
  kRepeat,        ///< the paper: every query head chooses its own tokens
  kGroupAverage,  ///< PyramidInfer: importance averaged over the group, one choice per group
};

/// "repeat" or "average", and back; parse throws naming the allowed values.
const char* to_string(GqaMode mode);
GqaMode parse_gqa_mode(const std::string& name);

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  virtual std::string name() const = 0;
  /// Query rows of prefill attention the policy needs (the last ones): the
  /// window by default; H2O needs every row.
  virtual int64_t attention_rows(int64_t tokens, int64_t window) const { return window; }
  /// kept [heads, tokens] bool. Must keep the last `window` tokens and at
  /// most keep_context others per query head.
  virtual at::Tensor select(const EvictionInput& input) const = 0;
};

/// Keeps everything (the full cache, and budget 100%).
class FullCachePolicy : public EvictionPolicy {
 public:
  std::string name() const override { return "full"; }
  at::Tensor select(const EvictionInput& input) const override;
};

/// SpindleKV's stage 1 (SnapKV's observation window): importance of context
/// token a for query head i is the attention it gets from the window's
/// queries, summed over them and divided by the number of window queries that
/// can see it (all of them for a context token, so the ranking is the sum's;
/// the paper's division by l - a counts positions outside the window too). The
/// top keep_context context tokens by importance are kept per head, with
/// optional max-pooling of importance over `pooling_kernel` neighbours
/// (SnapKV uses 7; SpindleKV none).
class WindowAttentionPolicy : public EvictionPolicy {
 public:
  explicit WindowAttentionPolicy(GqaMode gqa = GqaMode::kRepeat, int64_t pooling_kernel = 1);
  std::string name() const override;
  at::Tensor select(const EvictionInput& input) const override;

 private:
  GqaMode gqa_;
  int64_t pooling_kernel_;
};

/// Importance [heads, context] of the context tokens from the last `window`
/// attention rows (see WindowAttentionPolicy), in the attention's dtype.
at::Tensor window_importance(const EvictionInput& input);

/// The scores WindowAttentionPolicy ranks context tokens by: window_importance,
/// max-pooled over `pooling_kernel` neighbours (odd, 1: none), averaged over
/// each GQA group under GqaMode::kGroupAverage. Capture statistics call it,
/// so calibrated budgets rank tokens as the runtime does.
at::Tensor window_scores(const EvictionInput& input, GqaMode gqa = GqaMode::kRepeat,
                         int64_t pooling_kernel = 1);

/// Context positions [heads, context] int64 by descending score (ties: the
/// earlier token first): the order keep_top_scores keeps them in.
at::Tensor importance_order(const at::Tensor& scores);

/// GqaMode::kGroupAverage's scoring: each query head's scores [heads, n]
/// replaced by the mean over its group of heads / kv_heads query heads.
at::Tensor group_mean_scores(const at::Tensor& scores, int64_t kv_heads);

/// kept [heads, tokens]: the top `keep` of `scores` [heads, context] per head
/// (ties: lower position first), plus every token at or after `context`.
at::Tensor keep_top_scores(const at::Tensor& scores, int64_t keep, int64_t tokens);

}  // namespace spindlekv
