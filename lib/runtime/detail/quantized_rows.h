// Internal: exact rows of a quantised cache (KvQuantization), per KV head.
// Not installed; include only from lib/runtime/*.cpp and tests.
//
// Rows of head g are numbered in the order they were appended: rows
// [0, quantized[g]) are quantised, rows [quantized[g], quantized[g] +
// tail_count[g]) wait in the storage dtype (the recent window). Rows move
// from the tail to the quantised part in order, so a row keeps its number.
//   fp8   : each row e4m3 (uint8), one float32 scale per head; no tail.
//   kivi  : keys (kPerChannel) are quantised a block of `residual` rows at a
//           time, with a scale and zero point per channel for each group of
//           `group` rows: KIVI's keys, whose tail holds count mod residual
//           rows. Values (kPerToken) keep the last `residual` rows in the
//           tail; older rows are quantised one by one, with a scale and zero
//           point per group of `group` channels (the whole row when the head
//           is smaller): KIVI's values.
// Shapes: x float32; q uint8 codes (0..2^bits-1, or e4m3 bit patterns).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "runtime/storage_cost.h"

namespace spindlekv {
namespace detail {

/// e4m3 (OCP "e4m3fn": no infinities, max 448) bit patterns of x, rounded to
/// nearest (ties to the smaller magnitude), saturating at +-448.
at::Tensor fp8_e4m3_encode(const at::Tensor& x);
/// float32 values of e4m3 bit patterns (uint8).
at::Tensor fp8_e4m3_decode(const at::Tensor& q);
constexpr double kFp8Max = 448.0;

/// Asymmetric integer quantisation over the last dimension of x [..., n]:
/// zero = min, scale = (max - min) / (2^bits - 1), both rounded to
/// `stat_dtype` first and then used as stored, q = round((x - zero) / scale)
/// clamped to [0, 2^bits - 1]. scale and zero are [...].
struct IntGroups {
  at::Tensor q, scale, zero;
};
IntGroups quantize_int(const at::Tensor& x, int64_t bits, at::ScalarType stat_dtype);
/// q * scale + zero, float32, with scale/zero broadcast over the last dimension.
at::Tensor dequantize_int(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& zero);

/// Codes [..., n] (each < 2^bits) packed little end first into [..., n * bits / 8]
/// bytes, and back. n * bits must be a multiple of 8.
at::Tensor pack_bits(const at::Tensor& q, int64_t bits);
at::Tensor unpack_bits(const at::Tensor& packed, int64_t bits);

enum class QuantAxis {
  kPerChannel,  ///< keys: statistics per channel over groups of rows
  kPerToken,    ///< values: statistics per row over groups of channels
};

struct QuantizedRows {
  KvQuantization mode = KvQuantization::kNone;
  QuantAxis axis = QuantAxis::kPerChannel;
  StorageDtype dtype = StorageDtype::kFloat32;
  int64_t group = 32, residual = 32, head_dim = 0;
  at::Tensor packed;  ///< [kv_heads, capacity, row bytes] uint8
  /// kivi per channel: [kv_heads, capacity / group, head_dim]; per token:
  /// [kv_heads, capacity, head_dim / channel_group()]; magnitude dtype.
  at::Tensor scale, zero;
  at::Tensor fp8_scale;             ///< fp8: [kv_heads] float32 (0 until set)
  std::vector<int64_t> quantized;   ///< rows quantised per head
  at::Tensor tail;                  ///< [kv_heads, capacity, head_dim] storage dtype
  std::vector<int64_t> tail_count;  ///< rows waiting per head

  /// An empty table for `kv_heads` heads on the device of `options`. For fp8
  /// with calibrated scales pass them ([kv_heads] float32); otherwise each
  /// head's scale is set by its first append (max |x| / 448).
  static QuantizedRows empty(KvQuantization mode, QuantAxis axis, StorageDtype dtype,
                             int64_t kv_heads, int64_t head_dim, int64_t group, int64_t residual,
                             const at::TensorOptions& options,
                             const at::Tensor& fp8_scales = at::Tensor());
  /// Appends rows [m, head_dim] (float32) to head g, then quantises what
  /// the schedule above says.
  void append(int64_t g, const at::Tensor& rows);
  /// Every head's rows, dequantised: [kv_heads, max rows, head_dim] float32,
  /// zero past a head's count; written into `scratch` (Workspace::take) when
  /// given, else a fresh tensor.
  at::Tensor dequantize(at::Tensor* scratch = nullptr) const;
  int64_t rows(int64_t g) const { return quantized[g] + tail_count[g]; }
  /// Bytes the rows need: packed codes, scales and zero points, the tail.
  int64_t held_bytes() const;
  /// Bytes of every tensor, padding included.
  int64_t allocated_bytes() const;
  int64_t channel_group() const;

 private:
  void quantize_front(int64_t g, int64_t m);
  /// Quantised rows [start, start + m) of every head, float32 [kv_heads, m, head_dim].
  at::Tensor dequantize_block(int64_t start, int64_t m) const;
};

}  // namespace detail
}  // namespace spindlekv
