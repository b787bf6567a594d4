// llama.cpp's q4_0 cache type (ggml-quants.c, quantize_row_q4_0_ref): blocks
// of 32 values with one float16 scale d = max / -8, where max is the value of
// largest magnitude (the first, with its sign), and 4-bit codes
// min(15, trunc(x / d + 8.5)), no zero point; byte j of a block holds value
// j in its low nibble and value j + 16 in its high one. 18 bytes per 32
// values, whatever the cache's storage dtype. Decoded as (q - 8) * d.
// Name: q4_0. Fields: packed [head_dim / 2] uint8 per row; scale
// [head_dim / 32] float16 per row.
#include <ATen/ATen.h>

#include "core/error.h"
#include "runtime/detail/row_codec_family.h"

namespace spindlekv {
namespace detail {
namespace {

constexpr int64_t kBlock = 32;  // QK4_0

class Q4_0Coder : public RowCoder {
 public:
  explicit Q4_0Coder(const RowCodecContext& c) : kv_(c.kv_heads), d_(c.head_dim) {
    fields_ = {{"packed", RowField::Per::kRow, {d_ / 2}, at::kByte},
               {"scale", RowField::Per::kRow, {d_ / kBlock}, at::kHalf}};
  }
  const std::vector<RowField>& fields() const override { return fields_; }
  std::vector<at::Tensor> encode(const at::Tensor& x, int64_t,
                                 std::vector<at::Tensor>&) const override {
    const int64_t m = x.size(0), nb = d_ / kBlock;
    const at::Tensor b = x.view({m, nb, kBlock});
    const at::Tensor first = b.abs().argmax(-1, /*keepdim=*/true);  // the first largest
    const at::Tensor d = b.gather(-1, first).squeeze(-1) / -8.0f;
    const at::Tensor id = at::where(d != 0, 1.0f / d, at::zeros_like(d));
    const at::Tensor q =
        at::clamp_max(at::trunc(b * id.unsqueeze(-1) + 8.5f), 15).to(at::kInt);  // [m, nb, 32]
    const at::Tensor packed = q.narrow(2, 0, kBlock / 2) + q.narrow(2, kBlock / 2, kBlock / 2) * 16;
    return {packed.to(at::kByte).reshape({m, d_ / 2}), d.to(at::kHalf)};
  }
  at::Tensor decode(const std::vector<at::Tensor>& f, int64_t m) const override {
    const at::Tensor p = f[0].to(at::kInt).view({kv_, m, d_ / kBlock, kBlock / 2});
    const at::Tensor q = at::cat({p.bitwise_and(15), at::bitwise_right_shift(p, 4)}, 3);
    return ((q.to(at::kFloat) - 8.0f) * f[1].to(at::kFloat).unsqueeze(-1)).view({kv_, m, d_});
  }

 private:
  int64_t kv_, d_;
  std::vector<RowField> fields_;
};

}  // namespace

RowCodecFamily q4_0_codec_family() { return single_codec_family<Q4_0Coder>("q4_0", kBlock); }

}  // namespace detail
}  // namespace spindlekv
