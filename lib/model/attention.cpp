#include "model/attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace spindlekv {
namespace {

// [n, k_tokens] bool: which keys each of the n queries may see.
at::Tensor visibility(const at::Tensor& q_pos, const at::Tensor& k_pos, int64_t window) {
  at::Tensor qp = q_pos.unsqueeze(1);
  at::Tensor kp = k_pos.unsqueeze(0);
  at::Tensor visible = kp <= qp;
  if (window > 0) visible = visible.logical_and(kp > qp - window);
  return visible;
}

// Probabilities for query rows [start, start + n): [B, kv_heads, group, n, Tk].
at::Tensor block_probabilities(const at::Tensor& qg, const at::Tensor& kt, const at::Tensor& q_pos,
                               const at::Tensor& k_pos, int64_t window, int64_t start, int64_t n,
                               double scale) {
  const int64_t B = qg.size(0), hkv = qg.size(1), g = qg.size(2), d = qg.size(4);
  at::Tensor qc = qg.narrow(3, start, n).reshape({B, hkv, g * n, d});
  at::Tensor scores = at::matmul(qc, kt).mul_(scale).view({B, hkv, g, n, kt.size(-1)});
  at::Tensor hidden = visibility(q_pos.narrow(0, start, n), k_pos, window).logical_not();
  scores = scores.masked_fill(hidden, -std::numeric_limits<float>::infinity());
  return at::softmax(scores, -1);
}

}  // namespace

AttentionResult grouped_query_attention(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& q_positions,
                                        const at::Tensor& k_positions, int64_t sliding_window,
                                        int64_t probability_rows, int64_t max_score_bytes) {
  SKV_ASSERT(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention expects 4-d q, k, v");
  const int64_t B = q.size(0), h = q.size(1), Tq = q.size(2), d = q.size(3);
  const int64_t hkv = k.size(1), Tk = k.size(2);
  SKV_ASSERT(h % hkv == 0, "heads ", h, " not a multiple of kv heads ", hkv);
  SKV_ASSERT(k.sizes() == v.sizes(), "k and v shapes differ");
  SKV_ASSERT(q_positions.numel() == Tq && k_positions.numel() == Tk, "positions mismatch");
  const int64_t g = h / hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));

  // View the query heads as [B, kv_heads, group, Tq, d] so each KV head is
  // multiplied once against all of its queries, without repeating K or V.
  at::Tensor qg = q.view({B, hkv, g, Tq, d});
  at::Tensor kt = k.transpose(-1, -2);  // [B, hkv, d, Tk]
  const int64_t row_bytes = std::max<int64_t>(1, B * h * Tk * 4);
  const int64_t block = std::clamp<int64_t>(max_score_bytes / row_bytes, 1, std::max<int64_t>(Tq, 1));

  std::vector<at::Tensor> outs;
  for (int64_t start = 0; start < Tq; start += block) {
    const int64_t n = std::min(block, Tq - start);
    at::Tensor p = block_probabilities(qg, kt, q_positions, k_positions, sliding_window, start, n,
                                       scale);
    // [B, hkv, g*n, Tk] x [B, hkv, Tk, d]
    at::Tensor o = at::matmul(p.view({B, hkv, g * n, Tk}), v).view({B, hkv, g, n, d});
    outs.push_back(o);
  }
  AttentionResult result;
  result.output = (outs.size() == 1 ? outs[0] : at::cat(outs, 3)).reshape({B, h, Tq, d});
  if (probability_rows > 0) {
    const int64_t rows = std::min(probability_rows, Tq);
    result.probabilities =
        block_probabilities(qg, kt, q_positions, k_positions, sliding_window, Tq - rows, rows, scale)
            .reshape({B, h, rows, Tk});
  }
  return result;
}

}  // namespace spindlekv
