// fp8: every row as e4m3 (OCP e4m3fn) with one float32 scale per KV head,
// vLLM's per-tensor scheme. "fp8": each head's scale is fixed by the first
// rows it codes (its prefill), max |x| / 448; "fp8-calibrated": the
// artifact's scales (max |x| / 448 over the calibration capture).
// Fields: packed [head_dim] uint8 per row; fp8_scale float32 per head.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "core/error.h"
#include "runtime/artifact.h"
#include "runtime/detail/row_codec_family.h"
#include "runtime/detail/row_formats.h"

namespace spindlekv {
namespace detail {
namespace {

class Fp8Coder : public RowCoder {
 public:
  Fp8Coder(const RowCodecContext& c, at::Tensor scales)
      : kv_(c.kv_heads), d_(c.head_dim), scales_(std::move(scales)) {
    fields_ = {{"packed", RowField::Per::kRow, {d_}, at::kByte},
               {"fp8_scale", RowField::Per::kHead, {}, at::kFloat}};
  }
  const std::vector<RowField>& fields() const override { return fields_; }
  std::vector<at::Tensor> initial_head_fields(const at::TensorOptions& o) const override {
    if (scales_.defined()) return {scales_.to(o.device(), at::kFloat).clone()};
    return {at::zeros({kv_}, o.dtype(at::kFloat))};
  }
  std::vector<at::Tensor> encode(const at::Tensor& x, int64_t g,
                                 std::vector<at::Tensor>& head) const override {
    at::Tensor& scale = head[0];
    if (scale[g].item<float>() == 0.0f) {
      // On-the-fly scale: the first rows the head codes (its prefill) fix it.
      const double top = x.abs().max().item<double>();
      scale[g].fill_(top > 0 ? top / kFp8Max : 1.0);
    }
    return {fp8_e4m3_encode(x / scale[g])};
  }
  at::Tensor decode(const std::vector<at::Tensor>& f, int64_t m) const override {
    return fp8_e4m3_decode(f[0]) * f[1].view({kv_, 1, 1});
  }
  bool decode_on_host(const std::vector<at::Tensor>& f, const std::vector<int64_t>& coded,
                      int64_t E, float* out) const override {
    const at::Tensor packed = f[0].contiguous();
    const at::Tensor scale = f[1].to(at::kFloat).contiguous();
    const int64_t cap = packed.size(1), d = d_;
    const uint8_t* pk = packed.data_ptr<uint8_t>();
    const float* s = scale.data_ptr<float>();
    const float* lut = fp8_e4m3_table().data();
    int64_t Q = 0;
    for (int64_t q : coded) Q = std::max(Q, q);
    at::parallel_for(0, kv_ * Q, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t g = i / Q, row = i % Q;
        if (row >= coded[g]) continue;
        const uint8_t* p = pk + (g * cap + row) * d;
        float* o = out + (g * E + row) * d;
        for (int64_t c = 0; c < d; ++c) o[c] = lut[p[c]] * s[g];
      }
    });
    return true;
  }

 private:
  int64_t kv_, d_;
  at::Tensor scales_;  ///< calibrated [kv_heads] float32, or undefined
  std::vector<RowField> fields_;
};

class Fp8Codec : public RowCodec {
 public:
  explicit Fp8Codec(bool calibrated) : calibrated_(calibrated) {}
  std::string name() const override { return calibrated_ ? "fp8-calibrated" : "fp8"; }
  bool needs_artifact() const override { return calibrated_; }
  std::shared_ptr<const RowCoder> bind(const RowCodecContext& c) const override {
    at::Tensor scales;
    if (calibrated_) {
      SKV_CHECK(c.artifact != nullptr, "row codec 'fp8-calibrated' needs an artifact");
      SKV_CHECK(c.layer >= 0 && c.layer < static_cast<int64_t>(c.artifact->layers.size()), "layer ",
                c.layer, " is not in the artifact");
      const ArtifactLayer& L = c.artifact->layers[c.layer];
      scales = c.side == KvSide::kKeys ? L.fp8_key_scale : L.fp8_value_scale;
      SKV_CHECK(scales.defined(),
                "fp8 scales 'calibrated' need an artifact with fp8 scales; this one has none "
                "(export it again)");
      SKV_CHECK(scales.dim() == 1 && scales.size(0) == c.kv_heads, "fp8 scales must be [",
                c.kv_heads, "], got ", scales.sizes());
      SKV_CHECK((scales > 0).all().item<bool>(), "fp8 scales must be positive");
    }
    return std::make_shared<Fp8Coder>(c, scales);
  }

 private:
  bool calibrated_;
};

}  // namespace

RowCodecFamily fp8_codec_family() {
  return {"fp8, fp8-calibrated",
          {"fp8", "fp8-calibrated"},
          [](const std::string& name) -> std::shared_ptr<const RowCodec> {
            if (name == "fp8") return std::make_shared<Fp8Codec>(false);
            if (name == "fp8-calibrated") return std::make_shared<Fp8Codec>(true);
            return nullptr;
          }};
}

}  // namespace detail
}  // namespace spindlekv
