// KIVI (Liu et al., ICML 2024): asymmetric 4- or 2-bit integers. Keys are
// coded per channel: a block of `group` rows shares a scale and a zero point
// per channel, and keys wait in the storage dtype until a whole `recent`
// rows are there (count mod recent stay). Values are coded per token: a
// scale and zero point per group of `group` channels (the whole row when the
// head is smaller), the last `recent` rows waiting. Scales and zero points
// are in the magnitude width (storage_cost.h).
// Names: kivi<2|4>[-g<group>][-r<recent>], defaults 32 and 32.
// Fields: packed [head_dim * bits / 8] uint8 per row; keys: scale, zero
// [head_dim] per block; values: scale, zero [head_dim / channel group] per row.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "core/error.h"
#include "runtime/detail/compressed_storage.h"
#include "runtime/detail/row_codec_family.h"
#include "runtime/detail/row_formats.h"

namespace spindlekv {
namespace detail {
namespace {

struct KiviKnobs {
  int64_t bits = 4, group = 32, recent = 32;
};

class KiviCoder : public RowCoder {
 public:
  KiviCoder(const RowCodecContext& c, KiviKnobs k)
      : k_(k), kv_(c.kv_heads), d_(c.head_dim), per_channel_(c.side == KvSide::kKeys) {
    const at::ScalarType stat = magnitude_scalar_type(c.dtype);
    const int64_t row = d_ * k_.bits / 8;
    if (per_channel_) {
      fields_ = {{"packed", RowField::Per::kRow, {row}, at::kByte},
                 {"scale", RowField::Per::kBlock, {d_}, stat},
                 {"zero", RowField::Per::kBlock, {d_}, stat}};
    } else {
      fields_ = {{"packed", RowField::Per::kRow, {row}, at::kByte},
                 {"scale", RowField::Per::kRow, {d_ / channel_group()}, stat},
                 {"zero", RowField::Per::kRow, {d_ / channel_group()}, stat}};
    }
  }
  int64_t channel_group() const { return std::min(k_.group, d_); }
  const std::vector<RowField>& fields() const override { return fields_; }
  int64_t block_rows() const override { return per_channel_ ? k_.group : 1; }
  int64_t rows_to_code(int64_t waiting) const override {
    if (per_channel_) return (waiting / k_.recent) * k_.recent;
    return waiting > k_.recent ? waiting - k_.recent : 0;
  }
  std::vector<at::Tensor> encode(const at::Tensor& x, int64_t g,
                                 std::vector<at::Tensor>&) const override {
    const int64_t m = x.size(0), d = d_;
    const at::ScalarType stat = fields_[1].dtype;
    if (per_channel_) {
      // [m / group, group, d] -> statistics per channel over each group's rows.
      IntGroups s =
          quantize_int(x.view({m / k_.group, k_.group, d}).transpose(1, 2), k_.bits, stat);
      return {pack_bits(s.q.transpose(1, 2).reshape({m, d}), k_.bits), s.scale, s.zero};
    }
    const int64_t cg = channel_group();
    IntGroups s = quantize_int(x.view({m, d / cg, cg}), k_.bits, stat);
    return {pack_bits(s.q.reshape({m, d}), k_.bits), s.scale, s.zero};
  }
  at::Tensor decode(const std::vector<at::Tensor>& f, int64_t m) const override {
    const int64_t kv = kv_, d = d_, group = k_.group;
    at::Tensor q = unpack_bits(f[0], k_.bits);
    if (per_channel_) {  // m is a multiple of the group
      return dequantize_int(q.view({kv, m / group, group, d}).transpose(2, 3), f[1], f[2])
          .transpose(2, 3)
          .reshape({kv, m, d});
    }
    const int64_t cg = channel_group();
    return dequantize_int(q.view({kv, m, d / cg, cg}), f[1], f[2]).reshape({kv, m, d});
  }
  // One pass over the packed bytes, scales and zero points widened to
  // float32 first. The same arithmetic as decode()'s ATen operations (a
  // product rounded, then a sum rounded: codecs/ is built with
  // -ffp-contract=off), so the result is the same bit for bit.
  bool decode_on_host(const std::vector<at::Tensor>& f, const std::vector<int64_t>& coded,
                      int64_t E, float* out) const override {
    const int64_t d = d_;
    if (d > 1024) return false;
    const at::Tensor packed = f[0].contiguous();
    const int64_t cap = packed.size(1), row_bytes = packed.size(2);
    const uint8_t* pk = packed.data_ptr<uint8_t>();
    const at::Tensor scale = f[1].to(at::kFloat).contiguous();
    const at::Tensor zero = f[2].to(at::kFloat).contiguous();
    const float* sc = scale.data_ptr<float>();
    const float* zr = zero.data_ptr<float>();
    const int64_t stat_rows = scale.size(1), stat_cols = scale.size(2);
    const int64_t cg = channel_group(), group = k_.group, bits = k_.bits;
    int64_t Q = 0;
    for (int64_t q : coded) Q = std::max(Q, q);
    at::parallel_for(0, kv_ * Q, 256, [&](int64_t begin, int64_t end) {
      float codes[1024];
      for (int64_t i = begin; i < end; ++i) {
        const int64_t g = i / Q, row = i % Q;
        if (row >= coded[g]) continue;
        const uint8_t* p = pk + (g * cap + row) * row_bytes;
        float* o = out + (g * E + row) * d;
        if (bits == 4) {
          unpack_row<4>(p, row_bytes, codes);
        } else if (bits == 2) {
          unpack_row<2>(p, row_bytes, codes);
        } else {
          unpack_row<8>(p, row_bytes, codes);
        }
        if (per_channel_) {
          const float* s = sc + (g * stat_rows + row / group) * stat_cols;
          const float* z = zr + (g * stat_rows + row / group) * stat_cols;
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
    return true;
  }

 private:
  KiviKnobs k_;
  int64_t kv_, d_;
  bool per_channel_;
  std::vector<RowField> fields_;
};

class KiviCodec : public RowCodec {
 public:
  explicit KiviCodec(KiviKnobs k) : k_(k) {}
  std::string name() const override {
    std::string n = "kivi" + std::to_string(k_.bits);
    if (k_.group != 32) n += "-g" + std::to_string(k_.group);
    if (k_.recent != 32) n += "-r" + std::to_string(k_.recent);
    return n;
  }
  std::shared_ptr<const RowCoder> bind(const RowCodecContext& c) const override {
    const int64_t d = c.head_dim;
    SKV_CHECK((d * k_.bits) % 8 == 0, "head_dim ", d, " cannot be packed at ", k_.bits, " bits");
    if (c.side == KvSide::kKeys) {
      SKV_CHECK(k_.recent >= k_.group && k_.recent % k_.group == 0, "the recent window (",
                k_.recent, " rows) must be a positive multiple of the group (", k_.group, ")");
    } else {
      const int64_t cg = std::min(k_.group, d);
      SKV_CHECK(d % cg == 0, "head_dim ", d, " is not a multiple of the group ", cg);
    }
    return std::make_shared<KiviCoder>(c, k_);
  }

 private:
  KiviKnobs k_;
};

// "kivi4", "kivi2-g64-r128": null when not KIVI's.
std::shared_ptr<const RowCodec> parse_kivi(const std::string& name) {
  if (name.rfind("kivi", 0) != 0 || name.size() < 5) return nullptr;
  KiviKnobs k;
  std::vector<std::string> parts;
  size_t start = 4;
  while (true) {
    const size_t dash = name.find('-', start);
    parts.push_back(name.substr(start, dash == std::string::npos ? dash : dash - start));
    if (dash == std::string::npos) break;
    start = dash + 1;
  }
  k.bits = parse_suffix_number("b" + parts[0], "b");
  if (k.bits != 2 && k.bits != 4) return nullptr;
  for (size_t i = 1; i < parts.size(); ++i) {
    const int64_t g = parse_suffix_number(parts[i], "g"), r = parse_suffix_number(parts[i], "r");
    SKV_CHECK(g > 0 || r >= 0, "row codec '", name, "': '", parts[i],
              "' is neither g<group> nor r<recent rows>");
    (g > 0 ? k.group : k.recent) = g > 0 ? g : r;
  }
  return std::make_shared<KiviCodec>(k);
}

}  // namespace

RowCodecFamily kivi_codec_family() {
  return {"kivi<2|4>[-g<group>][-r<recent rows>]", {"kivi4", "kivi2"}, parse_kivi};
}

}  // namespace detail
}  // namespace spindlekv
