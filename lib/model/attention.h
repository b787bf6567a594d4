// Causal grouped-query attention over a set of cached keys with explicit
// positions (so that caches with evicted tokens attend correctly).
//
// Shapes (float32, bfloat16 or float16, any device; softmax accumulates in
// float32 and the probabilities are float32). On a GPU with LibTorch >= 2.5,
// decoding and a prefill from position 0 run LibTorch's fused
// scaled_dot_product_attention; the blocked path below serves the rest.
//   q [batch, heads, q_tokens, head_dim]          post-RoPE queries
//   k, v [batch, kv_heads, k_tokens, head_dim]    post-RoPE keys, values
//   q_positions [q_tokens] int64, k_positions [k_tokens] int64
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>

namespace spindlekv {

struct AttentionResult {
  at::Tensor output;  ///< [batch, heads, q_tokens, head_dim]
  /// Attention probabilities of the last `probability_rows` queries,
  /// [batch, heads, probability_rows, k_tokens]; undefined when none were asked.
  at::Tensor probabilities;
};

/// Softmax(q k^T / sqrt(d)) v where key j is visible to query i iff
/// k_positions[j] <= q_positions[i] and, with a sliding window w > 0,
/// k_positions[j] > q_positions[i] - w. Each KV head serves heads / kv_heads
/// consecutive query heads. Queries are processed in blocks of at most 128
/// rows (fewer when their scores would exceed `max_score_bytes`); when
/// k_positions is sorted, each block multiplies only the keys some of its
/// queries can see, so a causal prefill skips the masked half of the scores.
AttentionResult grouped_query_attention(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& q_positions,
                                        const at::Tensor& k_positions, int64_t sliding_window = 0,
                                        int64_t probability_rows = 0,
                                        int64_t max_score_bytes = int64_t{256} << 20);

}  // namespace spindlekv
