// Internal: reading coded vectors (compressed_storage.h) back, as dense
// vectors, as keys rotated by RoPE, or as a weighted sum of values. Not
// installed. Shapes as in compressed_storage.h; results are float32.
#pragma once

#include <ATen/Tensor.h>

#include "runtime/detail/compressed_storage.h"

namespace spindlekv {
namespace detail {

/// Dense vectors [kv_heads, slots, d] rebuilt from codes.
at::Tensor reconstruct(const CodedVectors& coded, const CodebookTables& tables);

/// Keys rebuilt from codes and rotated by RoPE at `positions` [kv_heads,
/// slots] int32 (padding < 0: row left zero), with `cos`/`sin` tables
/// [P, d] indexed by position: [kv_heads, slots, d]. One fused pass on CPU.
at::Tensor reconstruct_rotated(const CodedVectors& coded, const CodebookTables& tables,
                               const at::Tensor& positions, const at::Tensor& cos,
                               const at::Tensor& sin, Workspace* workspace = nullptr);

/// sum_s weights[g, r, s] * vector[g, s] for every KV head g and row r,
/// without rebuilding the vectors: weights times magnitudes are gathered per
/// entry, then multiplied with the entry tables. weights [kv_heads, R, slots];
/// returns [kv_heads, R, d].
at::Tensor weighted_sum(const CodedVectors& coded, const CodebookTables& tables,
                        const at::Tensor& weights, Workspace* workspace = nullptr);

}  // namespace detail
}  // namespace spindlekv
