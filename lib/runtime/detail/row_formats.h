// Internal: the number formats row codecs share (runtime/codecs/): fp8
// e4m3, asymmetric integer groups, and bit packing. Not installed; include
// only from lib/runtime/*.cpp and tests.
// Shapes: x float32; codes uint8 (0..2^bits-1, or e4m3 bit patterns).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

namespace spindlekv {
namespace detail {

/// e4m3 (OCP "e4m3fn": no infinities, max 448) bit patterns of x, rounded to
/// nearest (ties to the smaller magnitude), saturating at +-448.
at::Tensor fp8_e4m3_encode(const at::Tensor& x);
/// float32 values of e4m3 bit patterns (uint8).
at::Tensor fp8_e4m3_decode(const at::Tensor& q);
/// float32 of every e4m3 bit pattern, indexed by the pattern (256 entries).
const std::vector<float>& fp8_e4m3_table();
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

/// Codes [..., n] (each < 2^bits, bits 1, 2, 4 or 8) packed little end first
/// into [..., n * bits / 8] bytes, and back. n * bits must be a multiple of 8.
at::Tensor pack_bits(const at::Tensor& q, int64_t bits);
at::Tensor unpack_bits(const at::Tensor& packed, int64_t bits);

/// Codes [..., n] of any width 1..8 as one little-endian bit stream: code i
/// takes bits [i * bits, (i + 1) * bits) of the row, bit 0 of byte 0 first;
/// the last byte is padded with zeros: [..., ceil(n * bits / 8)] uint8.
/// Equals pack_bits where both apply.
at::Tensor pack_bit_stream(const at::Tensor& q, int64_t bits);
/// The first `n` codes of each row of `packed` [..., bytes], as uint8.
at::Tensor unpack_bit_stream(const at::Tensor& packed, int64_t bits, int64_t n);
/// Bytes of `n` codes of `bits` bits in one stream.
constexpr int64_t bit_stream_bytes(int64_t n, int64_t bits) { return (n * bits + 7) / 8; }

/// The codes of one packed row on the host: `bytes` bytes of 8 / BITS codes
/// each, low bits first, as floats.
template <int BITS>
inline void unpack_row(const uint8_t* p, int64_t bytes, float* codes) {
  constexpr int per = 8 / BITS, mask = (1 << BITS) - 1;
  for (int64_t j = 0; j < bytes; ++j) {
    const int b = p[j];
    for (int k = 0; k < per; ++k) codes[j * per + k] = static_cast<float>((b >> (BITS * k)) & mask);
  }
}

}  // namespace detail
}  // namespace spindlekv
