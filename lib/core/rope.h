// Rotary position embeddings (RoPE) in the Hugging Face "rotate half" layout:
// a head vector x = [x1, x2] (halves of d/2) becomes
// [x1 cos - x2 sin, x2 cos + x1 sin] with one frequency per pair.
//
// Shapes: positions [T] int64; cos/sin [T, head_dim] float32;
// x [..., T, head_dim] float32.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>

#include "core/cache_geometry.h"

namespace spindlekv {

/// Inverse frequencies [head_dim / 2] float64 for the config's scaling rule.
at::Tensor rope_inverse_frequencies(const RopeParameters& rope, int64_t head_dim);

/// Precomputed rotation for a set of positions.
struct RopeTables {
  at::Tensor cos;  ///< [T, head_dim]
  at::Tensor sin;  ///< [T, head_dim]
};

/// Tables for `positions` on the device of `positions`.
RopeTables rope_tables(const at::Tensor& inv_freq, const at::Tensor& positions);

/// Rotates x [..., T, head_dim] by the tables (broadcast over leading dims).
at::Tensor apply_rope(const at::Tensor& x, const RopeTables& tables);

/// The inverse rotation (rotation by -angle): recovers pre-RoPE vectors.
at::Tensor unapply_rope(const at::Tensor& x, const RopeTables& tables);

/// apply_rope on one row, for fused loops: out [d] = rotation of (scale * x)
/// by the table rows cos, sin [d] (d even), x stored as float32, float16 or
/// bfloat16 and widened on the fly. out must not alias x, cos or sin.
/// Compiled for AVX-512 and AVX2 besides the baseline on x86-64, the variant
/// picked at load time for the CPU it runs on; every variant rounds alike
/// (no contraction into fused multiply-adds).
void apply_rope_row(const float* x, float scale, const float* cos, const float* sin, float* out,
                    int64_t d);
void apply_rope_row(const c10::Half* x, float scale, const float* cos, const float* sin, float* out,
                    int64_t d);
void apply_rope_row(const c10::BFloat16* x, float scale, const float* cos, const float* sin,
                    float* out, int64_t d);

}  // namespace spindlekv
