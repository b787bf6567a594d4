#include "runtime/detail/quantized_rows.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "runtime/detail/compressed_storage.h"
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

int64_t nbytes(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

// float32 of every e4m3 bit pattern.
const std::vector<float>& e4m3_table() {
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

// The codes of one packed row: `bytes` bytes of 8 / BITS codes each, low
// bits first.
template <int BITS>
void unpack_row(const uint8_t* p, int64_t bytes, float* codes) {
  constexpr int per = 8 / BITS, mask = (1 << BITS) - 1;
  for (int64_t j = 0; j < bytes; ++j) {
    const int b = p[j];
    for (int k = 0; k < per; ++k) codes[j * per + k] = static_cast<float>((b >> (BITS * k)) & mask);
  }
}

// The quantised rows of every head written straight into `out` [kv, E, d]
// float32, on the CPU: one pass over the packed bytes, scales and zero
// points widened to float32 first (a 32nd of the codes' count). The same
// arithmetic as dequantize_block's ATen operations (a product rounded, then
// a sum rounded: this file is built with -ffp-contract=off), so the result
// is the same bit for bit.
void dequantize_quantized_cpu(const QuantizedRows& r, int64_t Q, int64_t E, float* out) {
  const int64_t kv = static_cast<int64_t>(r.quantized.size()), d = r.head_dim;
  const int64_t bits = storage::quantized_bits(r.mode);
  const at::Tensor packed = r.packed.contiguous();
  const int64_t cap = packed.size(1), row_bytes = packed.size(2);
  const uint8_t* pk = packed.data_ptr<uint8_t>();
  const bool fp8 = r.mode == KvQuantization::kFp8;
  const at::Tensor fp8_scale = fp8 ? r.fp8_scale.to(at::kFloat).contiguous() : at::Tensor();
  const float* f8s = fp8 ? fp8_scale.data_ptr<float>() : nullptr;
  const float* lut = e4m3_table().data();
  const at::Tensor scale = fp8 ? at::Tensor() : r.scale.to(at::kFloat).contiguous();
  const at::Tensor zero = fp8 ? at::Tensor() : r.zero.to(at::kFloat).contiguous();
  const float* sc = fp8 ? nullptr : scale.data_ptr<float>();
  const float* zr = fp8 ? nullptr : zero.data_ptr<float>();
  const int64_t stat_rows = fp8 ? 0 : scale.size(1), stat_cols = fp8 ? 0 : scale.size(2);
  const bool per_channel = r.axis == QuantAxis::kPerChannel;
  const int64_t cg = r.channel_group();
  at::parallel_for(0, kv * Q, 256, [&](int64_t begin, int64_t end) {
    float codes[1024];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g = i / Q, row = i % Q;
      if (row >= r.quantized[g]) continue;
      const uint8_t* p = pk + (g * cap + row) * row_bytes;
      float* o = out + (g * E + row) * d;
      if (fp8) {
        const float s = f8s[g];
        for (int64_t c = 0; c < d; ++c) o[c] = lut[p[c]] * s;
        continue;
      }
      if (bits == 4) {
        unpack_row<4>(p, row_bytes, codes);
      } else if (bits == 2) {
        unpack_row<2>(p, row_bytes, codes);
      } else {
        unpack_row<8>(p, row_bytes, codes);
      }
      if (per_channel) {
        const float* s = sc + (g * stat_rows + row / r.group) * stat_cols;
        const float* z = zr + (g * stat_rows + row / r.group) * stat_cols;
        for (int64_t c = 0; c < d; ++c) o[c] = codes[c] * s[c] + z[c];
      } else {
        const float* s = sc + (g * stat_rows + row) * stat_cols;
        const float* z = zr + (g * stat_rows + row) * stat_cols;
        for (int64_t k = 0; k < stat_cols; ++k) {
          const float sk = s[k], zk = z[k];
          float* ok = o + k * cg;
          const float* ck = codes + k * cg;
          for (int64_t c = 0; c < cg; ++c) ok[c] = ck[c] * sk + zk;
        }
      }
    }
  });
}

}  // namespace

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
  at::Tensor t = to_device(e4m3_table(), at::kFloat, q.device());
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

int64_t QuantizedRows::channel_group() const { return std::min(group, head_dim); }

QuantizedRows QuantizedRows::empty(KvQuantization mode, QuantAxis axis, StorageDtype dtype,
                                   int64_t kv, int64_t d, int64_t group, int64_t residual,
                                   const at::TensorOptions& options, const at::Tensor& fp8_scales) {
  QuantizedRows r;
  r.mode = mode;
  r.axis = axis;
  r.dtype = dtype;
  r.head_dim = d;
  r.group = group;
  r.residual = mode == KvQuantization::kFp8 ? 0 : residual;
  const int64_t bits = storage::quantized_bits(mode);
  SKV_CHECK(bits > 0, "KV quantisation '", to_string(mode), "' quantises nothing");
  SKV_CHECK((d * bits) % 8 == 0, "head_dim ", d, " cannot be packed at ", bits, " bits");
  const at::ScalarType stat = magnitude_scalar_type(dtype);
  r.packed = at::zeros({kv, 0, storage::quantized_row_bytes(d, mode)}, options.dtype(at::kByte));
  if (mode == KvQuantization::kFp8) {
    if (fp8_scales.defined()) {
      SKV_CHECK(fp8_scales.dim() == 1 && fp8_scales.size(0) == kv, "fp8 scales must be [", kv,
                "], got ", fp8_scales.sizes());
      SKV_CHECK((fp8_scales > 0).all().item<bool>(), "fp8 scales must be positive");
      r.fp8_scale = fp8_scales.to(options.device(), at::kFloat).clone();
    } else {
      r.fp8_scale = at::zeros({kv}, options.dtype(at::kFloat));
    }
  } else {
    SKV_CHECK_GT(group, 0, "quantisation group");
    if (axis == QuantAxis::kPerChannel) {
      SKV_CHECK(residual >= group && residual % group == 0, "the recent window (", residual,
                " rows) must be a positive multiple of the group (", group, ")");
      r.scale = at::zeros({kv, 0, d}, options.dtype(stat));
    } else {
      SKV_CHECK_GE(residual, 0, "recent window");
      SKV_CHECK(d % r.channel_group() == 0, "head_dim ", d, " is not a multiple of the group ",
                r.channel_group());
      r.scale = at::zeros({kv, 0, d / r.channel_group()}, options.dtype(stat));
    }
    r.zero = at::zeros_like(r.scale);
  }
  r.quantized.assign(kv, 0);
  r.tail = at::zeros({kv, 0, d}, options.dtype(entry_scalar_type(dtype)));
  r.tail_count.assign(kv, 0);
  return r;
}

void QuantizedRows::append(int64_t g, const at::Tensor& rows_in) {
  const int64_t m = rows_in.size(0);
  if (m == 0) return;
  const at::Tensor rows = rows_in.to(at::kFloat);
  if (mode == KvQuantization::kFp8 && fp8_scale[g].item<float>() == 0.0f) {
    // On-the-fly scale: the first rows the head sees (its prefill) fix it.
    const double top = rows.abs().max().item<double>();
    fp8_scale[g].fill_(top > 0 ? top / kFp8Max : 1.0);
  }
  const int64_t tc = tail_count[g];
  tail = grow_rows(tail, tc + m);
  tail[g].narrow(0, tc, m).copy_(rows);
  tail_count[g] = tc + m;
  if (mode == KvQuantization::kFp8) {
    quantize_front(g, tail_count[g]);
  } else if (axis == QuantAxis::kPerChannel) {
    const int64_t blocks = tail_count[g] / residual;
    if (blocks > 0) quantize_front(g, blocks * residual);
  } else if (tail_count[g] > residual) {
    quantize_front(g, tail_count[g] - residual);
  }
}

void QuantizedRows::quantize_front(int64_t g, int64_t m) {
  const int64_t d = head_dim, q0 = quantized[g], bits = storage::quantized_bits(mode);
  const at::Tensor x = tail[g].narrow(0, 0, m).to(at::kFloat);
  at::Tensor q;
  if (mode == KvQuantization::kFp8) {
    q = fp8_e4m3_encode(x / fp8_scale[g]);
  } else if (axis == QuantAxis::kPerChannel) {
    // [m / group, group, d] -> statistics per channel over each group's rows.
    IntGroups s =
        quantize_int(x.view({m / group, group, d}).transpose(1, 2), bits, scale.scalar_type());
    q = s.q.transpose(1, 2).reshape({m, d});
    scale = grow_rows(scale, (q0 + m) / group);
    zero = grow_rows(zero, (q0 + m) / group);
    scale[g].narrow(0, q0 / group, m / group).copy_(s.scale);
    zero[g].narrow(0, q0 / group, m / group).copy_(s.zero);
  } else {
    const int64_t cg = channel_group();
    IntGroups s = quantize_int(x.view({m, d / cg, cg}), bits, scale.scalar_type());
    q = s.q.reshape({m, d});
    scale = grow_rows(scale, q0 + m);
    zero = grow_rows(zero, q0 + m);
    scale[g].narrow(0, q0, m).copy_(s.scale);
    zero[g].narrow(0, q0, m).copy_(s.zero);
  }
  packed = grow_rows(packed, q0 + m);
  packed[g].narrow(0, q0, m).copy_(pack_bits(q, bits));
  const int64_t left = tail_count[g] - m;
  if (left > 0) tail[g].narrow(0, 0, left).copy_(tail[g].narrow(0, m, left).clone());
  tail[g].narrow(0, left, m).zero_();
  quantized[g] = q0 + m;
  tail_count[g] = left;
}

at::Tensor QuantizedRows::dequantize_block(int64_t start, int64_t m) const {
  const int64_t kv = static_cast<int64_t>(quantized.size()), d = head_dim;
  at::Tensor q = unpack_bits(packed.narrow(1, start, m), storage::quantized_bits(mode));
  if (mode == KvQuantization::kFp8) return fp8_e4m3_decode(q) * fp8_scale.view({kv, 1, 1});
  if (axis == QuantAxis::kPerChannel) {  // start and m are multiples of the group
    return dequantize_int(q.view({kv, m / group, group, d}).transpose(2, 3),
                          scale.narrow(1, start / group, m / group),
                          zero.narrow(1, start / group, m / group))
        .transpose(2, 3)
        .reshape({kv, m, d});
  }
  const int64_t cg = channel_group();
  return dequantize_int(q.view({kv, m, d / cg, cg}), scale.narrow(1, start, m),
                        zero.narrow(1, start, m))
      .reshape({kv, m, d});
}

at::Tensor QuantizedRows::dequantize(at::Tensor* scratch) const {
  const int64_t kv = static_cast<int64_t>(quantized.size()), d = head_dim;
  int64_t E = 0, Q = 0;
  for (int64_t g = 0; g < kv; ++g) {
    E = std::max(E, rows(g));
    Q = std::max(Q, quantized[g]);
  }
  at::Tensor out;
  if (scratch != nullptr) {
    out = Workspace::take(*scratch, kv, E, d, tail.options());
    for (int64_t g = 0; g < kv; ++g) out[g].narrow(0, rows(g), E - rows(g)).zero_();  // padding
  } else {
    out = at::zeros({kv, E, d}, tail.options().dtype(at::kFloat));
  }
  if (out.is_cpu() && Q > 0 && d <= 1024) {
    dequantize_quantized_cpu(*this, Q, E, out.data_ptr<float>());
  } else {
    // Other devices: a block of rows at a time, so the unpacking's temporaries stay small.
    const int64_t block = std::max<int64_t>(1, 1024 / group) * group;
    for (int64_t start = 0; start < Q; start += block) {
      const int64_t m = std::min(block, Q - start);
      const at::Tensor deq = dequantize_block(start, m);
      for (int64_t g = 0; g < kv; ++g) {
        const int64_t mg = std::min(m, quantized[g] - start);
        if (mg > 0) out[g].narrow(0, start, mg).copy_(deq[g].narrow(0, 0, mg));
      }
    }
  }
  for (int64_t g = 0; g < kv; ++g) {
    if (tail_count[g] > 0) {
      out[g].narrow(0, quantized[g], tail_count[g]).copy_(tail[g].narrow(0, 0, tail_count[g]));
    }
  }
  return out;
}

int64_t QuantizedRows::held_bytes() const {
  const int64_t d = head_dim, row = storage::quantized_row_bytes(d, mode);
  const int64_t stat = storage::quantization_stat_bytes(dtype);
  int64_t total = 0;
  for (size_t g = 0; g < quantized.size(); ++g) {
    const int64_t q = quantized[g];
    total += q * row + tail_count[g] * storage::vector_bytes(d, dtype);
    if (mode == KvQuantization::kFp8) {
      if (rows(static_cast<int64_t>(g)) > 0) total += storage::kFp8ScaleBytes;
    } else if (axis == QuantAxis::kPerChannel) {
      total += (q / group) * d * 2 * stat;
    } else {
      total += q * (d / channel_group()) * 2 * stat;
    }
  }
  return total;
}

int64_t QuantizedRows::allocated_bytes() const {
  return nbytes(packed) + nbytes(scale) + nbytes(zero) + nbytes(fp8_scale) + nbytes(tail);
}

}  // namespace detail
}  // namespace spindlekv
