// Internal: the reference the just-in-time builder is tested and benchmarked
// against, and its similarity graph (not installed).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>

#include "runtime/codebook_builder.h"

namespace spindlekv {

/// build_jit_codebook's greedy cover written as printed (degrees recounted
/// over the remaining graph every round, O(n^3)); the same result.
JitCodebook build_jit_codebook_naive(const at::Tensor& directions, double threshold);

/// How build_jit_codebooks builds its sets' similarity graphs.
enum class JitGraphs {
  kAuto,     ///< set by set on the CPU, batched on a device
  kPerSet,   ///< each set's graph at its own length, one set after another
  kBatched,  ///< as many sets' graphs at once as fit in max_graph_bytes (at least one)
};

/// The graphs build_jit_codebooks reads back at once by default (bytes of bits).
constexpr int64_t kJitGraphBytes = int64_t{1} << 28;

/// build_jit_codebooks with its graphs built as `graphs` says. With
/// `skip_zero_rows` false the caller vouches that every row below a set's
/// length is non-zero (a miss of compressed_storage.h), so the builder does
/// not read the rows back to find the zero ones.
JitCodebooks build_jit_codebooks(const at::Tensor& directions, const std::vector<int64_t>& lengths,
                                 double threshold, JitGraphs graphs, int64_t max_graph_bytes,
                                 bool skip_zero_rows = true);

/// How similarity_bits packs each block of the thresholded product into bits.
enum class BitPacking {
  kAuto,       ///< the host loop for CPU tensors, tensor operations on a device
  kHostLoop,   ///< a loop over the block on the host (the block is copied there)
  kTensorOps,  ///< ATen operations on the directions' device (no host copy per block)
};

/// The similarity graph of `unit` [n, d] float32 as build_jit_codebook holds
/// it: [n, ceil(n / 64) * 8] uint8 on the CPU, bit k of byte b of row i set
/// when cos(i, 8 b + k) > threshold and i != 8 b + k (padding bits zero).
/// `unit` [G, n, d] gives G such graphs, [G, n, ceil(n / 64) * 8].
/// Computed on `unit`'s device `block_rows` rows at a time (0: rows such
/// that one block's similarities hold about 2^26 floats on a device, 2^22 on
/// the host).
at::Tensor similarity_bits(const at::Tensor& unit, double threshold, int64_t block_rows,
                           BitPacking packing = BitPacking::kAuto);

}  // namespace spindlekv
