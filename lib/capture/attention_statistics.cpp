#include "capture/attention_statistics.h"

#include <ATen/ATen.h>

#include <cmath>

#include "common/error.h"

namespace spindlekv {

double similar_pair_fraction(const at::Tensor& vectors, double threshold) {
  const int64_t n = vectors.size(0);
  if (n < 2) return 0.0;
  at::Tensor norms = vectors.norm(2, 1, /*keepdim=*/true);
  // Zero vectors: leave them zero after "normalising" so every cosine is 0.
  at::Tensor unit = vectors / norms.clamp_min(1e-12);
  at::Tensor sims = at::matmul(unit, unit.t());
  const int64_t above = (sims > threshold).sum().item<int64_t>();
  const int64_t diagonal = (at::diagonal(sims) > threshold).sum().item<int64_t>();
  return static_cast<double>(above - diagonal) / static_cast<double>(n * (n - 1));
}

LayerAttentionStatistics compute_attention_statistics(const ForwardCapture::Layer& layer,
                                                      const AttentionStatisticsParameters& p) {
  SKV_CHECK(layer.attention.defined(), "attention statistics need captured attention rows");
  SKV_CHECK(layer.keys_pre_rope.defined() && layer.values.defined(),
            "attention statistics need captured pre-RoPE keys and values");
  at::Tensor att = layer.attention.to(at::kCPU, at::kDouble);  // [B, h, w, T]
  const int64_t B = att.size(0), h = att.size(1), w = att.size(2), T = att.size(3);
  const int64_t context = T - w;
  LayerAttentionStatistics out;
  out.heads.resize(h);

  // Importance of context token a: window attention summed over rows,
  // divided by the number of window queries that can see it (all w of them
  // here, since every context token precedes the window). SpindleKV divides
  // by (l - a), the count of all later positions; over the window alone
  // that count is w for every context token, so the ranking is the same.
  at::Tensor importance = att.narrow(3, 0, std::max<int64_t>(context, 0)).sum(2);  // [B, h, ctx]
  at::Tensor order = context > 0 ? importance.argsort(-1, /*descending=*/true) : at::Tensor();
  at::Tensor sorted_rows = std::get<0>(att.sort(-1, /*descending=*/true)).cumsum(-1);  // [B,h,w,T]
  at::Tensor entropy = -(att * att.clamp_min(1e-30).log2()).sum(-1);                   // [B,h,w]
  at::Tensor sink = att.narrow(3, 0, std::min(p.sink_tokens, T)).sum(-1);              // [B,h,w]
  // The tolerance keeps float32 rounding (0.9f < 0.9) from costing a token.
  at::Tensor need90 = (sorted_rows < 0.9 - 1e-6).sum(-1).to(at::kDouble) + 1;  // [B,h,w]
  at::Tensor window_mass = att.narrow(3, context, w).sum(-1);                          // [B,h,w]

  for (int64_t head = 0; head < h; ++head) {
    HeadAttentionStatistics& hs = out.heads[head];
    hs.sink_mass = sink.select(1, head).mean().item<double>();
    hs.entropy_bits = entropy.select(1, head).mean().item<double>();
    hs.fraction_for_90_percent = (need90.select(1, head) / T).mean().item<double>();
    for (double f : p.keep_fractions) {
      const int64_t k = std::min<int64_t>(context, static_cast<int64_t>(std::floor(f * context)));
      at::Tensor retained = window_mass.select(1, head);  // [B, w]
      if (k > 0) {
        at::Tensor kept = order.select(1, head).narrow(-1, 0, k);               // [B, k]
        at::Tensor rows = att.select(1, head);                                  // [B, w, T]
        at::Tensor idx = kept.unsqueeze(1).expand({B, w, k});
        retained = retained + rows.gather(2, idx).sum(-1);
      }
      hs.retained_mass.push_back(retained.mean().item<double>());
    }
  }

  const int64_t hkv = layer.keys_pre_rope.size(1), Tk = layer.keys_pre_rope.size(2);
  const int64_t stride = std::max<int64_t>(1, (Tk + p.max_pair_tokens - 1) / p.max_pair_tokens);
  for (int64_t g = 0; g < hkv; ++g) {
    double kf = 0, vf = 0;
    for (int64_t b = 0; b < B; ++b) {
      at::Tensor k = layer.keys_pre_rope[b][g].slice(0, 0, Tk, stride).to(at::kCPU, at::kFloat);
      at::Tensor v = layer.values[b][g].slice(0, 0, Tk, stride).to(at::kCPU, at::kFloat);
      kf += similar_pair_fraction(k, p.key_threshold);
      vf += similar_pair_fraction(v, p.value_threshold);
    }
    out.key_pair_fraction.push_back(kf / B);
    out.value_pair_fraction.push_back(vf / B);
  }
  return out;
}

}  // namespace spindlekv
