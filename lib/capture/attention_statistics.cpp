#include "capture/attention_statistics.h"

#include <ATen/ATen.h>

#include <cmath>

#include "core/error.h"
#include "runtime/codebook_builder.h"

namespace spindlekv {

double similar_pair_fraction(const at::Tensor& vectors, double threshold) {
  const int64_t n = vectors.size(0);
  if (n < 2) return 0.0;
  // Zero vectors stay zero (no direction), so every cosine with them is 0.
  at::Tensor unit = unit_directions(vectors);
  at::Tensor sims = at::matmul(unit, unit.t());
  const int64_t above = sims.gt(threshold).count_nonzero().item<int64_t>();
  const int64_t diagonal = (at::diagonal(sims) > threshold).sum().item<int64_t>();
  return static_cast<double>(above - diagonal) / static_cast<double>(n * (n - 1));
}

LayerAttentionStatistics compute_attention_statistics(const at::Tensor& attention,
                                                      const at::Tensor& keys_pre_rope,
                                                      const at::Tensor& values,
                                                      const AttentionStatisticsParameters& p) {
  SKV_CHECK(attention.defined(), "attention statistics need captured attention rows");
  SKV_CHECK(keys_pre_rope.defined() && values.defined(),
            "attention statistics need captured pre-RoPE keys and values");
  at::Tensor att = attention.to(at::kCPU, at::kDouble);  // [B, h, w, T]
  const int64_t B = att.size(0), h = att.size(1), w = att.size(2), T = att.size(3);
  const int64_t context = T - w;
  LayerAttentionStatistics out;
  out.heads.resize(h);

  // Context tokens in the order the runtime keeps them (one owner of the
  // importance score: runtime/eviction_policy.h).
  const int64_t hkv = keys_pre_rope.size(1);
  at::Tensor order;  // [B, h, ctx]
  if (context > 0) {
    std::vector<at::Tensor> orders;
    for (int64_t b = 0; b < B; ++b) {
      EvictionInput in;
      in.num_kv_heads = hkv;
      in.tokens = T;
      in.window = w;
      in.attention = att[b];
      orders.push_back(importance_order(window_scores(in, p.gqa, p.pooling_kernel)));
    }
    order = at::stack(orders);
  }
  at::Tensor sorted_rows = std::get<0>(att.sort(-1, /*descending=*/true)).cumsum(-1);  // [B,h,w,T]
  at::Tensor entropy = -(att * att.clamp_min(1e-30).log2()).sum(-1);                   // [B,h,w]
  at::Tensor sink = att.narrow(3, 0, std::min(p.sink_tokens, T)).sum(-1);              // [B,h,w]
  // The tolerance keeps float32 rounding (0.9f < 0.9) from costing a token.
  at::Tensor need90 = (sorted_rows < 0.9 - 1e-6).sum(-1).to(at::kDouble) + 1;  // [B,h,w]
  at::Tensor window_mass = att.narrow(3, context, w).sum(-1);                  // [B,h,w]

  // Mass each window row puts on the context tokens in importance order,
  // accumulated: retained(k) = window mass + cumulative[k - 1].
  at::Tensor cumulative;  // [B, h, w, ctx]
  if (context > 0) {
    at::Tensor idx = order.unsqueeze(2).expand({B, h, w, context});
    cumulative = att.narrow(3, 0, context).gather(3, idx).cumsum(-1);
  }
  std::vector<at::Tensor> per_fraction;
  for (double f : p.keep_fractions) {
    const int64_t k = std::min<int64_t>(context, static_cast<int64_t>(std::floor(f * context)));
    at::Tensor r = k > 0 ? window_mass + cumulative.select(3, k - 1) : window_mass;  // [B,h,w]
    per_fraction.push_back(r.mean(at::IntArrayRef{0, 2}));                           // [h]
  }
  at::Tensor retained = at::stack(per_fraction, 1).contiguous();  // [h, F]
  const std::vector<int64_t> dims = {0, 2};
  at::Tensor sink_h = sink.mean(dims), entropy_h = entropy.mean(dims);
  at::Tensor f90_h = (need90 / T).mean(dims);
  auto r_acc = retained.accessor<double, 2>();
  for (int64_t head = 0; head < h; ++head) {
    HeadAttentionStatistics& hs = out.heads[head];
    hs.sink_mass = sink_h[head].item<double>();
    hs.entropy_bits = entropy_h[head].item<double>();
    hs.fraction_for_90_percent = f90_h[head].item<double>();
    for (size_t i = 0; i < p.keep_fractions.size(); ++i) hs.retained_mass.push_back(r_acc[head][i]);
  }

  const int64_t Tk = keys_pre_rope.size(2);
  const int64_t stride = std::max<int64_t>(1, (Tk + p.max_pair_tokens - 1) / p.max_pair_tokens);
  for (int64_t g = 0; g < hkv; ++g) {
    double kf = 0, vf = 0;
    for (int64_t b = 0; b < B; ++b) {
      at::Tensor k = keys_pre_rope[b][g].slice(0, 0, Tk, stride).to(at::kCPU, at::kFloat);
      at::Tensor v = values[b][g].slice(0, 0, Tk, stride).to(at::kCPU, at::kFloat);
      kf += similar_pair_fraction(k, p.key_threshold);
      vf += similar_pair_fraction(v, p.value_threshold);
    }
    out.key_pair_fraction.push_back(kf / B);
    out.value_pair_fraction.push_back(vf / B);
  }
  return out;
}

}  // namespace spindlekv
