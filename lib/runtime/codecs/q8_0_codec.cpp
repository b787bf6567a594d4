// llama.cpp's q8_0 cache type (ggml-quants.c, quantize_row_q8_0_ref): blocks
// of 32 values with one float16 scale d = max |x| / 127 and int8 codes
// round(x / d), rounded half away from zero as roundf does; 34 bytes per 32
// values, whatever the cache's storage dtype. Decoded as q * d.
// Name: q8_0. Fields: packed [head_dim] int8 codes (as uint8) per row;
// scale [head_dim / 32] float16 per row.
#include <ATen/ATen.h>

#include "core/error.h"
#include "runtime/detail/row_codec_family.h"

namespace spindlekv {
namespace detail {
namespace {

constexpr int64_t kBlock = 32;  // QK8_0

class Q8_0Coder : public RowCoder {
 public:
  explicit Q8_0Coder(const RowCodecContext& c) : kv_(c.kv_heads), d_(c.head_dim) {
    fields_ = {{"packed", RowField::Per::kRow, {d_}, at::kByte},
               {"scale", RowField::Per::kRow, {d_ / kBlock}, at::kHalf}};
  }
  const std::vector<RowField>& fields() const override { return fields_; }
  std::vector<at::Tensor> encode(const at::Tensor& x, int64_t,
                                 std::vector<at::Tensor>&) const override {
    const int64_t m = x.size(0);
    const at::Tensor b = x.view({m, d_ / kBlock, kBlock});
    const at::Tensor d = std::get<0>(b.abs().max(-1)) / 127.0f;  // float32, as llama.cpp
    const at::Tensor id = at::where(d != 0, 1.0f / d, at::zeros_like(d));
    const at::Tensor v = (b * id.unsqueeze(-1)).to(at::kDouble);  // x * id in float32
    const at::Tensor q = at::sign(v) * at::floor(v.abs() + 0.5);  // roundf
    return {q.to(at::kChar).view({m, d_}).view(at::kByte), d.to(at::kHalf)};
  }
  at::Tensor decode(const std::vector<at::Tensor>& f, int64_t m) const override {
    const at::Tensor q = f[0].contiguous().view(at::kChar).to(at::kFloat);
    return (q.view({kv_, m, d_ / kBlock, kBlock}) * f[1].to(at::kFloat).unsqueeze(-1))
        .view({kv_, m, d_});
  }

 private:
  int64_t kv_, d_;
  std::vector<RowField> fields_;
};

}  // namespace

RowCodecFamily q8_0_codec_family() { return single_codec_family<Q8_0Coder>("q8_0", kBlock); }

}  // namespace detail
}  // namespace spindlekv
