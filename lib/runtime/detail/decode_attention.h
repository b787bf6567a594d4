// Internal: the fused decode step of a CUDA build (decode_kernels.cuh,
// queued by decode_kernel.cu): the append of the new K/V and the attention
// over a CompressedCache's stored layers. Not installed.
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
struct AppendLaunch;

/// True when this build has the CUDA kernel.
bool fused_decode_built();

/// Whether the fused kernel can attend over `layers` (one per sequence) on
/// `device`: a CUDA build and device (or the CPU with a CPU launcher set),
/// head_dim 32, 64, 128 or 256, at most 8 query heads per KV head, no
/// quantised exact rows, every table in the entry dtype. Otherwise the
/// caller takes the ATen path.
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

/// Whether fused_append can code a decode step's new K/V on `device`:
/// unquantised exact rows, at most 64 KV heads, head_dim at most 256, and
/// the calibrated tables in the entry dtype of `dtype`. The caller also
/// needs one new token per sequence and K/V that are not token ids.
bool fused_append_applies(CodebookMode mode, bool quantized, StorageDtype dtype,
                          const CodebookTables& keys, const CodebookTables& values,
                          const c10::Device& device, int64_t kv, int64_t head_dim);

/// Codes one new token per sequence into `layers` (filled ones, one per
/// sequence) in one launch per 8 sequences, as append_matched does (with
/// `extend` as its build_jit_from_misses) but with the exact-row and
/// just-in-time entry counts left on the device (read back every
/// kExactSettleSlots steps), and appends its position (and membership) to
/// each. new_keys (before RoPE) and new_values [batch, kv, 1, head_dim],
/// any floating dtype; positions [batch, 1] int64. Call only where
/// fused_append_applies.
void fused_append(const std::vector<SequenceLayer*>& layers, const CodebookTables& keys,
                  const CodebookTables& values, CodebookMode mode, bool extend,
                  const at::Tensor& new_keys, const at::Tensor& new_values,
                  const at::Tensor& positions, int64_t heads);

/// Queues one launch's kernels; returns an error string, or nullptr.
using DecodeLauncher = const char* (*)(const DecodeLaunch& launch, void* stream);
using AppendLauncher = const char* (*)(const AppendLaunch& launch, void* stream);

/// For tests: makes the fused path serve CPU caches too, each attention
/// launch run by `launcher` and each append by `append`
/// (tests/fused_decode_emulated_test.cpp runs the kernels' own source under a CPU
/// emulation of CUDA, tests/simt.h), with the split sized for
/// `multiprocessors`. A null launcher (the default) leaves its half to the
/// ATen path. Not thread-safe: set them where no cache is decoding.
void set_cpu_decode_launcher(DecodeLauncher launcher, int multiprocessors = 4,
                             AppendLauncher append = nullptr);

}  // namespace detail
}  // namespace spindlekv
