// Internal: the plain description of one fused decode launch (attention
// or append), shared by the kernels (decode_kernels.cuh: compiled by nvcc
// without ATen in decode_kernel.cu, or on the CPU under tests/simt.h) and
// their host side (decode_attention.cpp). Not installed.
//
// Per sequence and layer, as compressed_storage.h stores them (kv = KV
// heads, n = slots, D = head_dim, cap = a table's capacity in rows):
//   code       [kv, n] int16 or int32, row stride code_stride
//   magnitude  [kv, n] float32 or float16, row stride magnitude_stride
//   exact, jit [kv, cap, D] in the entry dtype, contiguous
//   positions  [kv, n] int32 (-1: padding), row stride positions_stride
//   member     [heads, n] bool or null, row stride member_stride
// Shared by the batch: the calibrated table [groups, Kc, D] (groups 1 or kv)
// and the RoPE tables cos, sin [P, D] float32.
// Queries [count, heads, D] and the output [count, heads, D] are float32.
#pragma once

#include <cstdint>

namespace spindlekv {
namespace detail {

/// Sequences one launch covers: the launch travels as a kernel parameter
/// (at most 4 KiB), so a larger batch takes several.
constexpr int kDecodeMaxSequences = 16;
/// Query heads per KV head the kernel holds in registers.
constexpr int kDecodeMaxGroup = 8;

/// dtypes of tables and magnitudes.
enum DecodeType : int32_t { kDecodeFloat32 = 0, kDecodeFloat16 = 1, kDecodeBFloat16 = 2 };

/// The keys or the values of one sequence.
struct DecodeSide {
  const void* code = nullptr;
  int64_t code_stride = 0;
  int32_t code_bytes = 4;  ///< 2: int16 (32767 is the zero code), 4: int32 (2^31 - 1 is)
  const void* magnitude = nullptr;
  int64_t magnitude_stride = 0;
  const void* exact = nullptr;
  int64_t exact_capacity = 0;
  const void* jit = nullptr;
  int64_t jit_capacity = 0;
};

struct DecodeSequence {
  DecodeSide keys, values;
  const int32_t* positions = nullptr;
  int64_t positions_stride = 0;
  const bool* member = nullptr;
  int64_t member_stride = 0;
  int64_t slots = 0;
};

/// A calibrated table (or a token-id table): codes [0, capacity) index it.
struct DecodeTable {
  const void* rows = nullptr;  ///< [groups, capacity, D]
  int64_t capacity = 0;
  int32_t shared = 0;  ///< 1: one group serves every KV head
};

struct DecodeLaunch {
  DecodeSequence seq[kDecodeMaxSequences];
  int32_t count = 0;
  DecodeTable key_table, value_table;
  const float* queries = nullptr;            ///< [count, heads, D]
  const int64_t* query_positions = nullptr;  ///< [count] on the device
  const float* cos = nullptr;                ///< [P, D]
  const float* sin = nullptr;
  float* out = nullptr;      ///< [count, heads, D]
  float* partial = nullptr;  ///< [count, kv, splits, group, D + 2] scratch
  int32_t heads = 0, kv_heads = 0, head_dim = 0, splits = 1;
  int64_t sliding_window = 0;  ///< 0: none
  float scale = 1;
  int32_t entry_type = kDecodeFloat32, magnitude_type = kDecodeFloat32;
};

/// Sequences one fused append launch covers (its launch, too, travels as a
/// kernel parameter).
constexpr int kAppendMaxSequences = 8;
/// KV heads the fused append serves (its per-head entry counts travel in
/// the launch).
constexpr int kAppendMaxKvHeads = 64;
/// Largest head_dim the fused append serves.
constexpr int kAppendMaxDim = 256;

/// The keys or the values of one sequence in a fused append: each KV head's
/// new vector coded into column `column` (as append_matched codes one
/// vector, with deferred exact-row and just-in-time entry counts).
struct AppendSide {
  const float* vectors = nullptr;  ///< [kv, D] float32 (keys before RoPE)
  void* code = nullptr;            ///< [kv, code_stride] int16 or int32
  int64_t code_stride = 0;
  int32_t code_bytes = 4;
  void* magnitude = nullptr;  ///< [kv, magnitude_stride] float32 or float16
  int64_t magnitude_stride = 0;
  void* exact = nullptr;  ///< [kv, exact_capacity, D] in the entry dtype
  int64_t exact_capacity = 0;
  int64_t* exact_used = nullptr;  ///< [kv] rows in use, advanced by a miss
  void* jit = nullptr;            ///< [kv, jit_capacity, D] in the entry dtype, or null
  int64_t jit_capacity = 0;
  int64_t* jit_used = nullptr;  ///< [kv] entries in use, advanced by an extension
};

struct AppendSequence {
  AppendSide side[2];            ///< keys, values
  int64_t column = 0;            ///< where the new token goes in every table below
  int32_t* positions = nullptr;  ///< [kv, positions_stride]
  int64_t positions_stride = 0;
  bool* member = nullptr;  ///< [heads, member_stride] or null
  int64_t member_stride = 0;
};

/// A calibrated table of one side, its entries in use per KV head, and the
/// cosine an entry must exceed to code a vector.
struct AppendTable {
  const void* rows = nullptr;  ///< [groups, capacity, D] or null (no table)
  int64_t capacity = 0;
  int32_t shared = 0;
  int32_t count[kAppendMaxKvHeads] = {};
  float threshold = 1;
  int64_t jit_offset = 0;  ///< the first just-in-time code: the table's capacity
};

/// One new token per sequence, both sides, one block per (KV head,
/// sequence, side).
struct AppendLaunch {
  AppendSequence seq[kAppendMaxSequences];
  int32_t count = 0;
  /// The just-in-time stage (CodebookMode kJustInTime, kHybrid): a vector
  /// no calibrated entry codes is matched with its head's entries; a miss
  /// becomes a new entry where `extend` is set, an exact row otherwise.
  int32_t use_jit = 0, extend = 0;
  AppendTable table[2];                      ///< keys, values
  const int64_t* query_positions = nullptr;  ///< [count] on the device
  int32_t heads = 0, kv_heads = 0, head_dim = 0;
  int32_t entry_type = kDecodeFloat32, magnitude_type = kDecodeFloat32;
};

/// Multiprocessors of CUDA device `device` (to size the split).
int decode_multiprocessors(int device);

/// Whether the kernels were built for the current CUDA device (an
/// architecture, or PTX it can compile): a build for sm_80 and sm_90 has
/// nothing for a V100 or T4, where the ATen path serves instead.
bool decode_kernel_runs_here();

/// Queues both kernels on `stream` (a cudaStream_t); returns a CUDA error
/// string, or nullptr when queued. Head dims 32, 64, 128 and 256 only.
const char* launch_decode_attention(const DecodeLaunch& launch, void* stream);

/// Queues the fused append on `stream`; returns a CUDA error string, or
/// nullptr when queued.
const char* launch_decode_append(const AppendLaunch& launch, void* stream);

}  // namespace detail
}  // namespace spindlekv
