#include "model/attention.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace spindlekv {
namespace {

// [n, k_tokens] true where the query may not see the key.
at::Tensor hidden_keys(const at::Tensor& q_pos, const at::Tensor& k_pos, int64_t window) {
  at::Tensor qp = q_pos.unsqueeze(1);
  at::Tensor kp = k_pos.unsqueeze(0);
  at::Tensor hidden = kp > qp;
  if (window > 0) hidden = hidden.logical_or(kp <= qp - window);
  return hidden;
}

// [n, k_tokens] additive mask: 0 where the query may see the key, -inf elsewhere.
at::Tensor visibility_bias(const at::Tensor& q_pos, const at::Tensor& k_pos, int64_t window) {
  at::Tensor hidden = hidden_keys(q_pos, k_pos, window);
  return at::zeros(hidden.sizes(), at::TensorOptions().dtype(at::kFloat).device(q_pos.device()))
      .masked_fill_(hidden, -std::numeric_limits<float>::infinity());
}

// Probabilities for query rows [start, start + n): [B * kv_heads, group * n, Tk].
// One baddbmm computes scale * q k^T + mask, so the score matrix is written
// once; softmax then reads and writes it once more.
at::Tensor block_probabilities(const at::Tensor& qg, const at::Tensor& kt, const at::Tensor& q_pos,
                               const at::Tensor& k_pos, int64_t window, int64_t start, int64_t n,
                               double scale) {
  const int64_t B = qg.size(0), hkv = qg.size(1), g = qg.size(2), d = qg.size(4);
  const int64_t Tk = kt.size(-1);
  // Float32 whatever the model's dtype: these rows score importance.
  at::Tensor qc = qg.narrow(3, start, n).reshape({B * hkv, g * n, d}).to(at::kFloat);
  at::Tensor bias = visibility_bias(q_pos.narrow(0, start, n), k_pos, window)
                        .unsqueeze(0)
                        .expand({g, n, Tk})
                        .reshape({1, g * n, Tk})
                        .expand({B * hkv, g * n, Tk});
  at::Tensor scores = at::baddbmm(bias, qc, kt.to(at::kFloat), /*beta=*/1.0, /*alpha=*/scale);
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
  at::Tensor kt = k.reshape({B * hkv, Tk, d}).transpose(1, 2);  // [B*hkv, d, Tk]
  at::Tensor v3 = v.reshape({B * hkv, Tk, d});

  // Positions on the host (one small copy): they decide which key columns a
  // block of queries can see at all.
  at::Tensor qp_cpu = q_positions.to(at::kCPU, at::kLong).contiguous();
  at::Tensor kp_cpu = k_positions.to(at::kCPU, at::kLong).contiguous();
  const int64_t* qp = qp_cpu.data_ptr<int64_t>();
  const int64_t* kp = kp_cpu.data_ptr<int64_t>();
  const bool keys_sorted = std::is_sorted(kp, kp + Tk);
  AttentionResult result;
  if (probability_rows > 0) {
    const int64_t rows = std::min(probability_rows, Tq);
    result.probabilities = block_probabilities(qg, kt, q_positions, k_positions, sliding_window,
                                               Tq - rows, rows, scale)
                               .view({B, hkv, g, rows, Tk})
                               .reshape({B, h, rows, Tk});
  }
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  // On a GPU, LibTorch's fused attention (flash or memory-efficient, GQA
  // without repeating K/V) where its two masks are ours: every query sees
  // every key (decoding), or queries and keys are the same positions 0..T-1
  // in order (a prefill from scratch, causal).
  if (!q.device().is_cpu() && Tq > 0 && Tk > 0) {
    const auto [qmin_it, qmax_it] = std::minmax_element(qp, qp + Tq);
    const int64_t qmin = *qmin_it, qmax = *qmax_it;
    const bool window_open = sliding_window <= 0 || qmax - kp[0] < sliding_window;
    const bool sees_all = keys_sorted && kp[Tk - 1] <= qmin && window_open;
    bool causal = Tq == Tk && keys_sorted && window_open;
    for (int64_t i = 0; causal && i < Tq; ++i) causal = qp[i] == i && kp[i] == i;
    if (sees_all || causal) {
      result.output = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                       /*is_causal=*/causal && !sees_all, scale,
                                                       /*enable_gqa=*/true);
      return result;
    }
  }
#endif

  // Query blocks small enough for the scores to stay in cache, and never
  // above max_score_bytes.
  const int64_t row_bytes = std::max<int64_t>(1, B * h * Tk * 4);
  const int64_t block = std::clamp<int64_t>(std::min<int64_t>(max_score_bytes / row_bytes, 128), 1,
                                            std::max<int64_t>(Tq, 1));
  at::Tensor qs = qg.mul(scale);
  const float neg_inf = -std::numeric_limits<float>::infinity();

  std::vector<at::Tensor> outs;
  for (int64_t start = 0; start < Tq; start += block) {
    const int64_t n = std::min(block, Tq - start);
    const auto [qmin_it, qmax_it] = std::minmax_element(qp + start, qp + start + n);
    const int64_t qmin = *qmin_it, qmax = *qmax_it;
    // Key columns [lo, hi) hold every key any query of the block sees; with
    // sorted key positions the causally masked blocks are skipped entirely.
    int64_t lo = 0, hi = Tk;
    if (keys_sorted) {
      hi = std::upper_bound(kp, kp + Tk, qmax) - kp;
      if (sliding_window > 0) lo = std::lower_bound(kp, kp + Tk, qmin - sliding_window + 1) - kp;
      hi = std::max(hi, lo);
    }
    const int64_t m = hi - lo;
    at::Tensor qc = qs.narrow(3, start, n).reshape({B * hkv, g * n, d});
    at::Tensor scores = at::bmm(qc, kt.narrow(2, lo, m));  // [B*hkv, g*n, m]
    at::Tensor s4 = scores.view({B * hkv, g, n, m});
    auto mask_columns = [&](int64_t from, int64_t to) {
      if (to <= from) return;
      at::Tensor hidden = hidden_keys(q_positions.narrow(0, start, n),
                                      k_positions.narrow(0, from, to - from), sliding_window);
      s4.narrow(3, from - lo, to - from).masked_fill_(hidden.view({1, 1, n, to - from}), neg_inf);
    };
    if (keys_sorted) {
      // Only the columns some query of the block cannot see get a mask: the
      // diagonal band (keys after qmin) and, with a window, the band before it.
      const int64_t c0 = std::upper_bound(kp + lo, kp + hi, qmin) - kp;
      const int64_t c1 =
          sliding_window > 0 ? std::upper_bound(kp + lo, kp + hi, qmax - sliding_window) - kp : lo;
      mask_columns(c0, hi);
      mask_columns(lo, std::min(c1, c0));
    } else {
      mask_columns(lo, hi);
    }
    // Softmax accumulates in float32 in every dtype (as Hugging Face's eager path).
    at::Tensor p = at::softmax(scores, -1, at::kFloat).to(v.scalar_type());
    outs.push_back(at::bmm(p, v3.narrow(1, lo, m)).view({B, hkv, g, n, d}));
  }
  result.output = (outs.size() == 1 ? outs[0] : at::cat(outs, 3)).reshape({B, h, Tq, d});
  return result;
}

}  // namespace spindlekv
