#include "runtime/baseline_policies.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/error.h"

namespace spindlekv {

StreamingLlmPolicy::StreamingLlmPolicy(int64_t sink_tokens) : sink_tokens_(sink_tokens) {
  SKV_CHECK_GE(sink_tokens, 0, "sink tokens");
}

at::Tensor StreamingLlmPolicy::select(const EvictionInput& in) const {
  const int64_t heads = in.attention.defined() ? in.attention.size(0) : 1;
  const int64_t context = std::max<int64_t>(in.tokens - in.window, 0);
  at::Tensor kept = at::zeros({heads, in.tokens}, at::TensorOptions().dtype(at::kBool));
  kept.narrow(1, context, in.tokens - context).fill_(true);
  const int64_t keep = std::min(in.keep_context, context);
  const int64_t sinks = std::min(sink_tokens_, keep);
  if (sinks > 0) kept.narrow(1, 0, sinks).fill_(true);
  const int64_t recent = keep - sinks;
  if (recent > 0) kept.narrow(1, context - recent, recent).fill_(true);
  return kept;
}

H2oPolicy::H2oPolicy(double recent_share, GqaMode gqa) : recent_share_(recent_share), gqa_(gqa) {
  SKV_CHECK(recent_share >= 0 && recent_share <= 1, "H2O recent share must lie in [0, 1], got ",
            recent_share);
}

at::Tensor H2oPolicy::select(const EvictionInput& in) const {
  SKV_CHECK(in.attention.defined() && in.attention.dim() == 3 && in.attention.size(2) == in.tokens,
            "H2O needs attention [heads, rows, tokens]");
  const int64_t heads = in.attention.size(0);
  const int64_t context = std::max<int64_t>(in.tokens - in.window, 0);
  const int64_t keep = std::min(in.keep_context, context);
  const int64_t recent = std::min<int64_t>(keep, static_cast<int64_t>(keep * recent_share_));
  const int64_t heavy = keep - recent;
  // Accumulated attention over every query row given (all of the prefill).
  at::Tensor score = in.attention.to(at::kFloat).sum(1).narrow(1, 0, context).clone();  // [h, ctx]
  if (gqa_ == GqaMode::kGroupAverage) score = group_mean_scores(score, in.num_kv_heads).clone();
  at::Tensor kept = at::zeros({heads, in.tokens}, score.options().dtype(at::kBool));
  kept.narrow(1, context, in.tokens - context).fill_(true);
  if (recent > 0) {
    kept.narrow(1, context - recent, recent).fill_(true);
    score.narrow(1, context - recent, recent).fill_(-1.0);  // already kept
  }
  if (heavy > 0) {
    kept.narrow(1, 0, context).scatter_(1, importance_order(score).narrow(1, 0, heavy), true);
  }
  return kept;
}

}  // namespace spindlekv
