#include "runtime/detail/row_formats.h"

#include <ATen/ATen.h>

#include <cmath>

#include "core/error.h"
#include "runtime/detail/host_transfer.h"

namespace spindlekv {
namespace detail {
namespace {

// The 127 non-negative finite e4m3 values in bit-pattern order (0x00..0x7E,
// increasing).
const std::vector<float>& e4m3_positive() {
  static const std::vector<float> values = [] {
    std::vector<float> v;
    for (int b = 0; b < 127; ++b) {
      const int e = (b >> 3) & 15, m = b & 7;
      v.push_back(e == 0 ? std::ldexp(m / 8.0f, -6) : std::ldexp(1.0f + m / 8.0f, e - 7));
    }
    return v;
  }();
  return values;
}

}  // namespace

const std::vector<float>& fp8_e4m3_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(256);
    const std::vector<float>& v = e4m3_positive();
    for (int b = 0; b < 127; ++b) {
      t[b] = v[b];
      t[b + 128] = -v[b];
    }
    t[127] = t[255] = std::nanf("");  // e4m3fn's NaN; never produced by the encoder
    return t;
  }();
  return table;
}

at::Tensor fp8_e4m3_encode(const at::Tensor& x) {
  static const std::vector<float> midpoints = [] {
    const std::vector<float>& v = e4m3_positive();
    std::vector<float> mid(v.size() - 1);
    for (size_t i = 0; i + 1 < v.size(); ++i) mid[i] = (v[i] + v[i + 1]) / 2;
    return mid;
  }();
  at::Tensor bounds = to_device(midpoints, at::kFloat, x.device());
  at::Tensor a = x.to(at::kFloat).abs().clamp_max(kFp8Max).nan_to_num(0.0);
  at::Tensor index = at::bucketize(a, bounds, /*out_int32=*/true);  // 0..126
  at::Tensor sign = (x < 0).to(at::kInt) * 128;
  return (index + sign).to(at::kByte);
}

at::Tensor fp8_e4m3_decode(const at::Tensor& q) {
  at::Tensor t = to_device(fp8_e4m3_table(), at::kFloat, q.device());
  return t.index_select(0, q.reshape({-1}).to(at::kLong)).view(q.sizes());
}

IntGroups quantize_int(const at::Tensor& x_in, int64_t bits, at::ScalarType stat_dtype) {
  const at::Tensor x = x_in.to(at::kFloat);
  const double levels = static_cast<double>((1 << bits) - 1);
  IntGroups g;
  at::Tensor lo = std::get<0>(x.min(-1)), hi = std::get<0>(x.max(-1));
  g.zero = lo.to(stat_dtype);
  g.scale = ((hi - lo) / levels).to(stat_dtype);
  at::Tensor s = g.scale.to(at::kFloat).unsqueeze(-1), z = g.zero.to(at::kFloat).unsqueeze(-1);
  at::Tensor q = at::where(s > 0, at::round((x - z) / s), at::zeros_like(x));
  g.q = q.clamp(0, levels).to(at::kByte);
  return g;
}

at::Tensor dequantize_int(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& zero) {
  return q.to(at::kFloat) * scale.to(at::kFloat).unsqueeze(-1) + zero.to(at::kFloat).unsqueeze(-1);
}

at::Tensor pack_bits(const at::Tensor& q, int64_t bits) {
  if (bits == 8) return q.to(at::kByte);
  const int64_t per = 8 / bits, n = q.size(-1);
  SKV_CHECK(n % per == 0, "cannot pack ", n, " codes of ", bits, " bits into whole bytes");
  std::vector<int64_t> shape(q.sizes().begin(), q.sizes().end());
  shape.back() = n / per;
  shape.push_back(per);
  std::vector<int64_t> weights;
  for (int64_t j = 0; j < per; ++j) weights.push_back(int64_t{1} << (bits * j));
  at::Tensor w = to_device(weights, at::kInt, q.device());
  return (q.to(at::kInt).view(shape) * w).sum(-1).to(at::kByte);
}

at::Tensor unpack_bits(const at::Tensor& packed, int64_t bits) {
  if (bits == 8) return packed;
  const int64_t per = 8 / bits;
  std::vector<int64_t> shifts;
  for (int64_t j = 0; j < per; ++j) shifts.push_back(bits * j);
  at::Tensor s = to_device(shifts, at::kInt, packed.device());
  at::Tensor q = at::bitwise_right_shift(packed.to(at::kInt).unsqueeze(-1), s)
                     .bitwise_and((int64_t{1} << bits) - 1);
  std::vector<int64_t> shape(packed.sizes().begin(), packed.sizes().end());
  shape.back() *= per;
  return q.to(at::kByte).reshape(shape);
}

at::Tensor pack_bit_stream(const at::Tensor& q, int64_t bits) {
  SKV_CHECK(bits >= 1 && bits <= 8, "codes of ", bits, " bits cannot be packed");
  const int64_t n = q.size(-1), bytes = bit_stream_bytes(n, bits);
  std::vector<int64_t> shifts;
  for (int64_t j = 0; j < bits; ++j) shifts.push_back(j);
  const at::Tensor s = to_device(shifts, at::kInt, q.device());
  // [..., n, bits] bits of each code, then the stream [..., n * bits] padded to whole bytes.
  at::Tensor stream = at::bitwise_right_shift(q.to(at::kInt).unsqueeze(-1), s).bitwise_and(1);
  std::vector<int64_t> flat(q.sizes().begin(), q.sizes().end());
  flat.back() = n * bits;
  stream = stream.reshape(flat);
  if (bytes * 8 > n * bits) {
    std::vector<int64_t> pad = flat;
    pad.back() = bytes * 8 - n * bits;
    stream = at::cat({stream, at::zeros(pad, stream.options())}, -1);
  }
  std::vector<int64_t> shape = flat;
  shape.back() = bytes;
  shape.push_back(8);
  std::vector<int64_t> weights;
  for (int64_t j = 0; j < 8; ++j) weights.push_back(int64_t{1} << j);
  const at::Tensor w = to_device(weights, at::kInt, q.device());
  return (stream.view(shape) * w).sum(-1).to(at::kByte);
}

at::Tensor unpack_bit_stream(const at::Tensor& packed, int64_t bits, int64_t n) {
  SKV_CHECK(bits >= 1 && bits <= 8, "codes of ", bits, " bits cannot be unpacked");
  const int64_t bytes = packed.size(-1);
  SKV_CHECK(bit_stream_bytes(n, bits) <= bytes, n, " codes of ", bits, " bits need ",
            bit_stream_bytes(n, bits), " bytes, the rows have ", bytes);
  std::vector<int64_t> eight;
  for (int64_t j = 0; j < 8; ++j) eight.push_back(j);
  const at::Tensor s = to_device(eight, at::kInt, packed.device());
  // [..., bytes * 8] bits, the first n * bits of them regrouped as [..., n, bits].
  at::Tensor stream = at::bitwise_right_shift(packed.to(at::kInt).unsqueeze(-1), s).bitwise_and(1);
  std::vector<int64_t> flat(packed.sizes().begin(), packed.sizes().end());
  flat.back() = bytes * 8;
  stream = stream.reshape(flat).narrow(-1, 0, n * bits);
  std::vector<int64_t> shape = flat;
  shape.back() = n;
  shape.push_back(bits);
  std::vector<int64_t> weights;
  for (int64_t j = 0; j < bits; ++j) weights.push_back(int64_t{1} << j);
  const at::Tensor w = to_device(weights, at::kInt, packed.device());
  return (stream.reshape(shape) * w).sum(-1).to(at::kByte);
}

}  // namespace detail
}  // namespace spindlekv
