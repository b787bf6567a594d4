#include "runtime/eviction_policy.h"

#include <ATen/ATen.h>

#include "core/error.h"

namespace spindlekv {
namespace {

void check_input(const EvictionInput& in) {
  SKV_CHECK(in.attention.defined() && in.attention.dim() == 3,
            "attention must be [heads, rows, tokens]");
  SKV_CHECK_EQ(in.attention.size(2), in.tokens, "attention covers other tokens");
  SKV_CHECK(in.attention.size(1) >= std::min(in.window, in.tokens), "attention has ",
            in.attention.size(1), " rows, the window needs ", in.window);
  SKV_CHECK(in.window >= 0 && in.keep_context >= 0, "window ", in.window, " and budget ",
            in.keep_context, " must not be negative");
  SKV_CHECK(in.num_kv_heads > 0 && in.attention.size(0) % in.num_kv_heads == 0,
            in.attention.size(0), " heads are not a multiple of ", in.num_kv_heads, " KV heads");
}

}  // namespace

const char* to_string(GqaMode mode) { return mode == GqaMode::kRepeat ? "repeat" : "average"; }

GqaMode parse_gqa_mode(const std::string& name) {
  if (name == "repeat") return GqaMode::kRepeat;
  if (name == "average") return GqaMode::kGroupAverage;
  SKV_THROW(kInvalidInput, "gqa mode '", name, "' is unknown (allowed: repeat, average)");
}

at::Tensor FullCachePolicy::select(const EvictionInput& in) const {
  const int64_t heads = in.attention.defined() ? in.attention.size(0) : 1;
  return at::ones({heads, in.tokens}, at::TensorOptions().dtype(at::kBool));
}

at::Tensor window_importance(const EvictionInput& in) {
  check_input(in);
  const int64_t context = std::max<int64_t>(in.tokens - in.window, 0);
  const int64_t rows = std::min(in.window, in.attention.size(1));
  // float32, whatever the input: the capture statistics (float64) rank as the cache does.
  at::Tensor att = in.attention.narrow(1, in.attention.size(1) - rows, rows).to(at::kFloat);
  // Window rows that see each token: every one for context tokens.
  return att.narrow(2, 0, context).sum(1) / static_cast<double>(std::max<int64_t>(rows, 1));
}

at::Tensor group_mean_scores(const at::Tensor& scores, int64_t kv_heads) {
  const int64_t heads = scores.size(0), group = heads / kv_heads;
  return scores.reshape({kv_heads, group, -1})
      .mean(1, /*keepdim=*/true)
      .expand({kv_heads, group, scores.size(1)})
      .reshape({heads, -1});
}

at::Tensor keep_top_scores(const at::Tensor& scores, int64_t keep, int64_t tokens) {
  const int64_t heads = scores.size(0), context = scores.size(1);
  at::Tensor kept = at::zeros({heads, tokens}, scores.options().dtype(at::kBool));
  kept.narrow(1, context, tokens - context).fill_(true);
  keep = std::min(keep, context);
  if (keep <= 0) return kept;
  kept.narrow(1, 0, context).scatter_(1, importance_order(scores).narrow(1, 0, keep), true);
  return kept;
}

at::Tensor importance_order(const at::Tensor& scores) {
  // Stable descending sort: among equal scores the earlier token wins.
  return std::get<1>(scores.sort(/*stable=*/true, -1, /*descending=*/true));
}

at::Tensor window_scores(const EvictionInput& in, GqaMode gqa, int64_t pooling_kernel) {
  SKV_CHECK(pooling_kernel >= 1 && pooling_kernel % 2 == 1, "pooling kernel must be odd and ",
            ">= 1, got ", pooling_kernel);
  at::Tensor scores = window_importance(in);  // [heads, context]
  if (pooling_kernel > 1 && scores.size(1) > 0) {
    scores = at::max_pool1d(scores.unsqueeze(0), pooling_kernel, 1, pooling_kernel / 2).squeeze(0);
  }
  if (gqa == GqaMode::kGroupAverage) scores = group_mean_scores(scores, in.num_kv_heads);
  return scores;
}

WindowAttentionPolicy::WindowAttentionPolicy(GqaMode gqa, int64_t pooling_kernel)
    : gqa_(gqa), pooling_kernel_(pooling_kernel) {
  SKV_CHECK(pooling_kernel >= 1 && pooling_kernel % 2 == 1, "pooling kernel must be odd and ",
            ">= 1, got ", pooling_kernel);
}

std::string WindowAttentionPolicy::name() const {
  return std::string("window-attention(") + to_string(gqa_) + ", pool " +
         std::to_string(pooling_kernel_) + ")";
}

at::Tensor WindowAttentionPolicy::select(const EvictionInput& in) const {
  return keep_top_scores(window_scores(in, gqa_, pooling_kernel_), in.keep_context, in.tokens);
}

}  // namespace spindlekv
