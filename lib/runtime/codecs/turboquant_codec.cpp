// TurboQuant-style codes (Zandieh, Daliri, Hadian, Mirrokni, "TurboQuant:
// Online Vector Quantization with Near-optimal Distortion Rate", ICLR 2026,
// arXiv 2504.19874; its MSE variant): each row's norm is kept in the
// magnitude width (float16 unless the cache is float32), the unit direction
// is rotated by a fixed random orthogonal matrix, and every rotated
// coordinate is coded by a b-bit Lloyd-Max quantiser for the distribution of
// one coordinate of a uniformly random unit vector, density proportional to
// (1 - t^2)^((head_dim - 3) / 2) on [-1, 1], computed once per (head_dim, b).
// No calibration. The paper bounds the mean squared error of a unit vector
// by sqrt(3) pi / 2 * 4^-b (about 0.36, 0.117, 0.03, 0.009 for b = 1..4).
//
// The rotation of each (layer, KV head, K|V) comes from a recorded seed: a
// randomised Hadamard transform H diag(s) / sqrt(head_dim) with random signs
// s where head_dim is a power of two (the signs are its table, one byte
// each), else the Q factor of a Gaussian matrix (its table, float32).
// Fractional widths ("tq2.5") follow the paper's outlier split: the first
// half of the rotated coordinates take b + 1 bits, the rest b, so the row
// costs exactly (b + 0.5) * head_dim bits. After a random rotation every
// coordinate has the same distribution, so which half is immaterial.
// Names: tq<1..8>[.5][-s<seed>]. Fields: packed [bytes] uint8 per row (the
// wider half's bit stream, then the narrower's); norm per row.
//
// Decoding rotates back. With the Hadamard rotation R = H diag(s) / sqrt(d),
// y R is the Walsh-Hadamard transform of y scaled per column by s / sqrt(d):
// d log d additions instead of a d x d product. decode() does it in tensor
// operations, and on the CPU decode_on_host() does the same additions in the
// same order in one pass per row (bit for bit the same; codecs/ is built
// with -ffp-contract=off).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <map>
#include <mutex>

#include "core/error.h"
#include "runtime/detail/compressed_storage.h"
#include "runtime/detail/row_codec_family.h"
#include "runtime/detail/row_formats.h"

namespace spindlekv {
namespace detail {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double uniform01(uint64_t& state) {  // in (0, 1)
  return (static_cast<double>(splitmix64(state) >> 11) + 0.5) / 9007199254740992.0;
}

bool power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// The Walsh-Hadamard transform (Sylvester's order) of the last dimension,
// unnormalised: at each stage h, x[j] and x[j + h] of each block of 2h
// become their sum and difference.
at::Tensor walsh_hadamard(at::Tensor x) {
  const std::vector<int64_t> sizes = x.sizes().vec();
  const int64_t d = sizes.back(), lead = d > 0 ? x.numel() / d : 0;
  for (int64_t h = 1; h < d; h *= 2) {
    const at::Tensor v = x.reshape({lead, d / (2 * h), 2, h});
    const at::Tensor a = v.select(2, 0), b = v.select(2, 1);
    x = at::stack({a + b, a - b}, 2).reshape(sizes);
  }
  return x;
}

// The same transform of one row in place, the same additions in the same order.
void walsh_hadamard_row(float* x, int64_t d) {
  for (int64_t h = 1; h < d; h *= 2) {
    for (int64_t i = 0; i < d; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
}

// Code `k` of `bits` bits from a stream packed as pack_bit_stream does
// (least significant bit first), `bytes` long.
inline int code_at(const uint8_t* p, int64_t bytes, int64_t k, int64_t bits) {
  const int64_t pos = k * bits, byte = pos >> 3;
  uint32_t w = p[byte];
  if (byte + 1 < bytes) w |= static_cast<uint32_t>(p[byte + 1]) << 8;
  return static_cast<int>((w >> (pos & 7)) & ((1u << bits) - 1));
}

}  // namespace

// Lloyd-Max centroids (increasing) of `bits` bits for one coordinate of a
// uniformly random unit vector in `dim` dimensions. Shared with the tests.
const std::vector<double>& sphere_lloyd_max(int64_t dim, int64_t bits) {
  static std::mutex mutex;
  static std::map<std::pair<int64_t, int64_t>, std::vector<double>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({dim, bits});
  if (it != cache.end()) return it->second;
  // The density on a fine midpoint grid of [-1, 1].
  const int64_t n = 40000, K = int64_t{1} << bits;
  std::vector<double> t(n), w(n), cdf(n);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    t[i] = -1.0 + (2.0 * i + 1.0) / n;
    w[i] = std::pow(std::max(0.0, 1.0 - t[i] * t[i]), (static_cast<double>(dim) - 3.0) / 2.0);
    total += w[i];
    cdf[i] = total;
  }
  // Start at the cells' quantile midpoints, then Lloyd's iterations.
  std::vector<double> c(K);
  for (int64_t k = 0, i = 0; k < K; ++k) {
    const double q = (k + 0.5) / K * total;
    while (i < n - 1 && cdf[i] < q) ++i;
    c[k] = t[i];
  }
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<double> sum(K, 0.0), mass(K, 0.0);
    int64_t k = 0;
    for (int64_t i = 0; i < n; ++i) {
      while (k + 1 < K && t[i] > (c[k] + c[k + 1]) / 2) ++k;
      sum[k] += w[i] * t[i];
      mass[k] += w[i];
    }
    double moved = 0;
    for (int64_t j = 0; j < K; ++j) {
      if (mass[j] > 0) {
        moved = std::max(moved, std::abs(sum[j] / mass[j] - c[j]));
        c[j] = sum[j] / mass[j];
      }
    }
    if (moved < 1e-12) break;
  }
  return cache.emplace(std::make_pair(dim, bits), c).first->second;
}

// The rotation of one head: [d, d] float64, orthogonal, from `seed`.
at::Tensor random_rotation(int64_t d, uint64_t seed) {
  uint64_t state = seed;
  if (power_of_two(d)) {
    // Sylvester's Hadamard matrix times random signs, scaled to be orthogonal.
    std::vector<double> h(d * d);
    for (int64_t i = 0; i < d; ++i) {
      for (int64_t j = 0; j < d; ++j) h[i * d + j] = __builtin_popcountll(i & j) % 2 ? -1.0 : 1.0;
    }
    for (int64_t j = 0; j < d; ++j) {
      const double s = (splitmix64(state) & 1) ? -1.0 : 1.0;
      for (int64_t i = 0; i < d; ++i) h[i * d + j] *= s / std::sqrt(static_cast<double>(d));
    }
    return at::tensor(h, at::kDouble).view({d, d});
  }
  std::vector<double> gauss(d * d);
  for (double& v : gauss) {  // Box-Muller from the seeded stream
    v = std::sqrt(-2.0 * std::log(uniform01(state))) * std::cos(2 * M_PI * uniform01(state));
  }
  auto [q, r] = at::linalg_qr(at::tensor(gauss, at::kDouble).view({d, d}));
  return q * at::sign(r.diagonal()).unsqueeze(0);  // Haar: Q's columns signed by diag(R)
}

namespace {

struct TqKnobs {
  int64_t bits = 3;   ///< the narrower width
  bool half = false;  ///< "b.5": half the coordinates at bits + 1
  uint64_t seed = 0;
  std::string name;
};

class TurboQuantCoder : public RowCoder {
 public:
  TurboQuantCoder(const RowCodecContext& c, const TqKnobs& k) : kv_(c.kv_heads), d_(c.head_dim) {
    d_hi_ = k.half ? d_ / 2 : d_;
    hi_ = k.half ? k.bits + 1 : k.bits;
    lo_ = k.bits;
    bytes_hi_ = bit_stream_bytes(d_hi_, hi_);
    const int64_t bytes = bytes_hi_ + bit_stream_bytes(d_ - d_hi_, lo_);
    fields_ = {{"packed", RowField::Per::kRow, {bytes}, at::kByte},
               {"norm", RowField::Per::kRow, {}, magnitude_scalar_type(c.dtype)}};
    std::vector<at::Tensor> rot;
    for (int64_t g = 0; g < kv_; ++g) {
      const uint64_t seed = k.seed ^ (static_cast<uint64_t>(c.layer) << 32) ^
                            (static_cast<uint64_t>(g) << 8) ^
                            (c.side == KvSide::kKeys ? 0x5A5Aull : 0xA5A5ull);
      rot.push_back(random_rotation(d_, seed));
    }
    rotation_ = at::stack(rot).to(c.device, at::kFloat);  // [kv, d, d]
    hadamard_ = power_of_two(d_);
    // R's first row is s / sqrt(d) (H's first row is all ones): its column scales.
    if (hadamard_) column_scale_ = rotation_.select(1, 0).unsqueeze(1).contiguous();  // [kv, 1, d]
    for (int64_t b : {hi_, lo_}) {
      const std::vector<double>& c64 = sphere_lloyd_max(d_, b);
      std::vector<float> cent(c64.begin(), c64.end()), mid;
      for (size_t i = 0; i + 1 < c64.size(); ++i) mid.push_back((c64[i] + c64[i + 1]) / 2);
      centroids_.push_back(at::tensor(cent, at::kFloat).to(c.device));
      bounds_.push_back(at::tensor(mid, at::kFloat).to(c.device));
    }
    shared_ = (power_of_two(d_) ? kv_ * d_ : kv_ * d_ * d_ * 4) +
              4 * ((int64_t{1} << hi_) + (hi_ != lo_ ? int64_t{1} << lo_ : 0));
  }
  const std::vector<RowField>& fields() const override { return fields_; }
  std::vector<at::Tensor> encode(const at::Tensor& x, int64_t g,
                                 std::vector<at::Tensor>&) const override {
    const at::Tensor norm = x.norm(2, {-1}, /*keepdim=*/true);  // [m, 1]
    const at::Tensor u = at::where(norm > 0, x / norm, at::zeros_like(x));
    // Rotated unit directions [m, d]. One product: for a prefill's many rows
    // it was faster than the butterflies in tensor operations (runtime_bench,
    // 2026-12-08).
    const at::Tensor y = u.matmul(rotation_[g].t());
    std::vector<at::Tensor> parts;
    parts.push_back(pack_bit_stream(
        at::bucketize(y.narrow(1, 0, d_hi_).contiguous(), bounds_[0]).to(at::kByte), hi_));
    if (d_hi_ < d_) {
      parts.push_back(pack_bit_stream(
          at::bucketize(y.narrow(1, d_hi_, d_ - d_hi_).contiguous(), bounds_[1]).to(at::kByte),
          lo_));
    }
    return {at::cat(parts, 1), norm.squeeze(1).to(fields_[1].dtype)};
  }
  at::Tensor decode(const std::vector<at::Tensor>& f, int64_t m) const override {
    const at::Tensor& packed = f[0];
    auto values = [&](int64_t part, int64_t offset, int64_t bytes, int64_t n, int64_t bits) {
      const at::Tensor idx = unpack_bit_stream(packed.narrow(2, offset, bytes), bits, n);
      return centroids_[part].index_select(0, idx.reshape({-1}).to(at::kLong)).view({kv_, m, n});
    };
    at::Tensor y = values(0, 0, bytes_hi_, d_hi_, hi_);
    if (d_hi_ < d_) {
      y = at::cat({y, values(1, bytes_hi_, packed.size(2) - bytes_hi_, d_ - d_hi_, lo_)}, 2);
    }
    const at::Tensor x = hadamard_ ? walsh_hadamard(y) * column_scale_ : at::bmm(y, rotation_);
    return x * f[1].to(at::kFloat).unsqueeze(-1);
  }
  bool decode_on_host(const std::vector<at::Tensor>& f, const std::vector<int64_t>& coded,
                      int64_t E, float* out) const override {
    const int64_t d = d_;
    if (!hadamard_ || d > 1024) return false;
    const at::Tensor packed = f[0].contiguous();
    const at::Tensor norm = f[1].to(at::kFloat).contiguous();
    const int64_t cap = packed.size(1), row_bytes = packed.size(2);
    const uint8_t* pk = packed.data_ptr<uint8_t>();
    const float* nm = norm.data_ptr<float>();
    const at::Tensor hi = centroids_[0].cpu(), lo = centroids_[1].cpu();
    const at::Tensor scale = column_scale_.cpu();
    const float* c_hi = hi.data_ptr<float>();
    const float* c_lo = lo.data_ptr<float>();
    const float* cs = scale.data_ptr<float>();
    const int64_t d_hi = d_hi_, bits_hi = hi_, bits_lo = lo_, bytes_hi = bytes_hi_;
    int64_t Q = 0;
    for (int64_t q : coded) Q = std::max(Q, q);
    at::parallel_for(0, kv_ * Q, 256, [&](int64_t begin, int64_t end) {
      float y[1024];
      for (int64_t i = begin; i < end; ++i) {
        const int64_t g = i / Q, row = i % Q;
        if (row >= coded[g]) continue;
        const uint8_t* p = pk + (g * cap + row) * row_bytes;
        for (int64_t k = 0; k < d_hi; ++k) y[k] = c_hi[code_at(p, bytes_hi, k, bits_hi)];
        for (int64_t k = d_hi; k < d; ++k) {
          y[k] = c_lo[code_at(p + bytes_hi, row_bytes - bytes_hi, k - d_hi, bits_lo)];
        }
        walsh_hadamard_row(y, d);
        const float n = nm[g * cap + row];
        const float* s = cs + g * d;
        float* o = out + (g * E + row) * d;
        for (int64_t j = 0; j < d; ++j) o[j] = y[j] * s[j] * n;
      }
    });
    return true;
  }
  int64_t shared_bytes() const override { return shared_; }

 private:
  int64_t kv_, d_, d_hi_ = 0, hi_ = 0, lo_ = 0, bytes_hi_ = 0, shared_ = 0;
  bool hadamard_ = false;  ///< the rotation is H diag(s) / sqrt(d)
  std::vector<RowField> fields_;
  at::Tensor rotation_;                         ///< [kv, d, d] float32
  at::Tensor column_scale_;                     ///< [kv, 1, d] float32: s / sqrt(d), if hadamard_
  std::vector<at::Tensor> centroids_, bounds_;  ///< for the wider and the narrower half
};

class TurboQuantCodec : public RowCodec {
 public:
  explicit TurboQuantCodec(TqKnobs k) : k_(std::move(k)) {}
  std::string name() const override { return k_.name; }
  std::shared_ptr<const RowCoder> bind(const RowCodecContext& c) const override {
    SKV_CHECK(c.head_dim >= 4, "row codec '", k_.name, "' needs head_dim >= 4, got ", c.head_dim);
    SKV_CHECK(!k_.half || c.head_dim % 2 == 0, "row codec '", k_.name,
              "' splits the coordinates in halves; head_dim ", c.head_dim, " is odd");
    return std::make_shared<TurboQuantCoder>(c, k_);
  }

 private:
  TqKnobs k_;
};

// "tq3", "tq2.5", "tq4-s7": null when not TurboQuant's.
std::shared_ptr<const RowCodec> parse_tq(const std::string& name) {
  if (name.rfind("tq", 0) != 0 || name.size() < 3) return nullptr;
  TqKnobs k;
  k.name = name;
  std::string rest = name.substr(2);
  const size_t dash = rest.find('-');
  if (dash != std::string::npos) {
    const int64_t s = parse_suffix_number(rest.substr(dash + 1), "s");
    SKV_CHECK(s >= 0, "row codec '", name, "': '", rest.substr(dash + 1), "' is not s<seed>");
    k.seed = static_cast<uint64_t>(s);
    rest = rest.substr(0, dash);
  }
  if (rest.size() > 2 && rest.compare(rest.size() - 2, 2, ".5") == 0) {
    k.half = true;
    rest = rest.substr(0, rest.size() - 2);
  }
  k.bits = parse_suffix_number("b" + rest, "b");
  if (k.bits < 1) return nullptr;
  SKV_CHECK(k.bits <= (k.half ? 7 : 8), "row codec '", name, "': at most 8 bits a coordinate");
  return std::make_shared<TurboQuantCodec>(k);
}

}  // namespace

RowCodecFamily turboquant_codec_family() {
  return {"tq<1..8>[.5][-s<seed>]", {"tq2", "tq2.5", "tq3", "tq4"}, parse_tq};
}

}  // namespace detail
}  // namespace spindlekv
