#include "core/rope.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>

#include "core/error.h"

namespace spindlekv {

at::Tensor rope_inverse_frequencies(const RopeParameters& rope, int64_t head_dim) {
  SKV_CHECK_EQ(head_dim % 2, 0, "rotary head_dim must be even");
  const int64_t half = head_dim / 2;
  at::Tensor inv = at::empty({half}, at::kDouble);
  double* p = inv.data_ptr<double>();
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(rope.theta, static_cast<double>(2 * i) / head_dim);
    switch (rope.scaling) {
      case RopeScaling::kNone:
        break;
      case RopeScaling::kLinear:
        f /= rope.factor;
        break;
      case RopeScaling::kLlama3: {
        // Llama 3.1: long wavelengths are interpolated by `factor`, short ones
        // kept, and the band between them blended smoothly.
        const double old_ctx = static_cast<double>(rope.original_max_position_embeddings);
        const double low_wavelen = old_ctx / rope.low_freq_factor;
        const double high_wavelen = old_ctx / rope.high_freq_factor;
        const double wavelen = 2.0 * M_PI / f;
        if (wavelen > low_wavelen) {
          f /= rope.factor;
        } else if (wavelen >= high_wavelen) {
          const double smooth = (old_ctx / wavelen - rope.low_freq_factor) /
                                (rope.high_freq_factor - rope.low_freq_factor);
          f = (1.0 - smooth) * f / rope.factor + smooth * f;
        }
        break;
      }
    }
    p[i] = f;
  }
  return inv;
}

RopeTables rope_tables(const at::Tensor& inv_freq, const at::Tensor& positions) {
  // Angles in float64 so that positions in the hundreds of thousands keep
  // their precision; the tables themselves are float32.
  at::Tensor pos = positions.to(at::kDouble);
  at::Tensor freqs = at::outer(pos, inv_freq.to(positions.device()));  // [T, d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);                        // [T, d]
  return {emb.cos().to(at::kFloat), emb.sin().to(at::kFloat)};
}

namespace {
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

at::Tensor apply_rope(const at::Tensor& x, const RopeTables& t) {
  return x * t.cos + rotate_half(x) * t.sin;
}

at::Tensor unapply_rope(const at::Tensor& x, const RopeTables& t) {
  return x * t.cos - rotate_half(x) * t.sin;
}

// One row of RoPE, written so that the compiler vectorises it; on x86-64
// GCC also emits AVX2 and AVX-512 variants, chosen by the loader (ifunc).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SKV_CPU_VARIANTS \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SKV_CPU_VARIANTS
#endif

namespace {

template <typename T>
SKV_CPU_VARIANTS void rope_row(const T* __restrict x, float scale, const float* __restrict cos,
                               const float* __restrict sin, float* __restrict out, int64_t d) {
  const int64_t half = d / 2;
  for (int64_t j = 0; j < half; ++j) {
    const float x1 = static_cast<float>(x[j]) * scale;
    const float x2 = static_cast<float>(x[j + half]) * scale;
    out[j] = x1 * cos[j] - x2 * sin[j];
    out[j + half] = x2 * cos[j + half] + x1 * sin[j + half];
  }
}

}  // namespace

void apply_rope_row(const float* x, float scale, const float* cos, const float* sin, float* out,
                    int64_t d) {
  rope_row(x, scale, cos, sin, out, d);
}
void apply_rope_row(const c10::Half* x, float scale, const float* cos, const float* sin, float* out,
                    int64_t d) {
  rope_row(x, scale, cos, sin, out, d);
}
void apply_rope_row(const c10::BFloat16* x, float scale, const float* cos, const float* sin,
                    float* out, int64_t d) {
  rope_row(x, scale, cos, sin, out, d);
}

}  // namespace spindlekv
