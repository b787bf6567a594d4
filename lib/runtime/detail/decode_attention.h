// Internal: the fused decode attention of a CUDA build (decode_kernel.cu)
// called on a CompressedCache's stored layers. Not installed.
//   queries    [batch, heads, 1, head_dim] post-RoPE (any floating dtype)
//   positions  [batch, 1] int64 on the cache's device
//   cos, sin   [P, head_dim] float32 RoPE tables covering every position
// Returns [batch, heads, 1, head_dim] float32.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "runtime/detail/compressed_storage.h"

namespace spindlekv {
namespace detail {

struct DecodeLaunch;  // decode_launch.h

/// True when this build has the CUDA kernel.
bool fused_decode_built();

/// Whether the fused kernel can attend over `layers` (one per sequence) on
/// `device`: a CUDA build and device (or the CPU with a CPU launcher set), head_dim 32, 64, 128 or
/// 256, at most 8 query heads per KV head, no quantised exact rows, every table in the entry dtype.
/// Otherwise the caller takes the ATen path.
bool fused_decode_applies(const std::vector<const SequenceLayer*>& layers,
                          const CodebookTables& keys, const CodebookTables& values,
                          const c10::Device& device, int64_t heads, int64_t head_dim);

/// The attention of one new query per sequence over what `layers` hold,
/// as the ATen path of CompressedCache::append_and_attend computes it.
/// `sliding_window` 0: none. Call only where fused_decode_applies.
at::Tensor fused_decode_attention(const std::vector<const SequenceLayer*>& layers,
                                  const CodebookTables& keys, const CodebookTables& values,
                                  const at::Tensor& queries, const at::Tensor& positions,
                                  const at::Tensor& cos, const at::Tensor& sin,
                                  int64_t sliding_window);

/// Queues one launch's kernels; returns an error string, or nullptr.
using DecodeLauncher = const char* (*)(const DecodeLaunch& launch, void* stream);

/// For tests: makes the fused path serve CPU caches too, each launch run by
/// `launcher` (tests/fused_decode_test.cpp runs the kernels' own source
/// under a CPU emulation of CUDA, tests/simt.h), with the split sized for
/// `multiprocessors`. nullptr (the default) turns it off. Not thread-safe:
/// set it where no cache is decoding.
void set_cpu_decode_launcher(DecodeLauncher launcher, int multiprocessors = 4);

}  // namespace detail
}  // namespace spindlekv
