// Eviction baselines as EvictionPolicy plug-ins, each following its paper's
// defaults. Budgets (uniform or pyramid) are set by CompressionParameters;
// a policy only decides which tokens fill a budget. With GQA, a window or
// heavy-hitter policy either chooses per query head (GqaMode::kRepeat: the
// cache stores the union per KV head plus a membership mask) or averages the
// scores over each group and chooses once per KV head (kGroupAverage, as
// PyramidInfer, AdaKV and KVCache-Factory do); `spindlekv eval` runs both.
//
//   StreamingLLM (Xiao et al. 2023): the first `sink_tokens` tokens (4) plus
//     the most recent ones.
//   H2O (Zhang et al. 2023): half the budget for the most recent tokens, half
//     for the heavy hitters by attention accumulated over every query of the
//     prefill.
//   SnapKV (Li et al. 2024) and PyramidKV (Cai et al. 2024): window-query
//     importance max-pooled over 7 neighbours (WindowAttentionPolicy).
//   PyramidInfer (Yang et al. 2024): window-query importance averaged over
//     each GQA group, no pooling.
#pragma once

#include "runtime/eviction_policy.h"

namespace spindlekv {

class StreamingLlmPolicy : public EvictionPolicy {
 public:
  explicit StreamingLlmPolicy(int64_t sink_tokens = 4);
  std::string name() const override { return "streaming"; }
  at::Tensor select(const EvictionInput& input) const override;

 private:
  int64_t sink_tokens_;
};

class H2oPolicy : public EvictionPolicy {
 public:
  /// `recent_share` of the budget goes to the most recent context tokens;
  /// `gqa` says whether heavy hitters are chosen per query head or per group.
  explicit H2oPolicy(double recent_share = 0.5, GqaMode gqa = GqaMode::kRepeat);
  std::string name() const override { return gqa_ == GqaMode::kRepeat ? "h2o" : "h2o-mean"; }
  int64_t attention_rows(int64_t tokens, int64_t window) const override { return tokens; }
  at::Tensor select(const EvictionInput& input) const override;

 private:
  double recent_share_;
  GqaMode gqa_;
};

}  // namespace spindlekv
