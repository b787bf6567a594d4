// Internal: a look inside a CompressedCache for tests and tools (not
// installed). The dense cache a compressed one stands for:
//   keys       [kv_heads, slots, head_dim] float32, post-RoPE
//   values     [kv_heads, slots, head_dim] float32
//   positions  [kv_heads, slots] int64 (-1 for padding)
//   visible    [heads, slots] bool
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>

#include "runtime/compressed_cache.h"

namespace spindlekv {
namespace detail {

struct DenseLayer {
  at::Tensor keys, values, positions, visible;
};

struct CacheAccess {
  static const auto& impl(const CompressedCache& cache) { return *cache.impl_; }
};

/// The dense form of one filled (sequence, layer); throws kInvalidInput
/// naming them when it holds nothing. Leaves the cache untouched.
DenseLayer reconstruct_layer(const CompressedCache& cache, int64_t sequence, int64_t layer);

}  // namespace detail
}  // namespace spindlekv
