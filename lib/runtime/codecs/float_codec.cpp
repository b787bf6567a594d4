// Rows in a floating dtype of their own, whatever the cache's storage dtype:
// "fp16" (IEEE half) and "bf16" (bfloat16), 2 bytes per element, round to
// nearest even. What an engine's plain KV cache type is (vLLM's
// kv_cache_dtype "auto" in that dtype); with a float32 cache they halve the
// exact rows, with a float16 cache "fp16" stores what "none" stores.
// Not in row_codec_names(): a float16 cache's default already stores so.
// Fields: rows [head_dim] per row in the codec's dtype.
#include <ATen/ATen.h>

#include "runtime/detail/row_codec_family.h"

namespace spindlekv {
namespace detail {
namespace {

template <at::ScalarType kDtype>
class FloatCoder : public RowCoder {
 public:
  explicit FloatCoder(const RowCodecContext& c) : kv_(c.kv_heads), d_(c.head_dim) {
    fields_ = {{"rows", RowField::Per::kRow, {d_}, kDtype}};
  }
  const std::vector<RowField>& fields() const override { return fields_; }
  std::vector<at::Tensor> encode(const at::Tensor& x, int64_t,
                                 std::vector<at::Tensor>&) const override {
    return {x.to(kDtype)};
  }
  at::Tensor decode(const std::vector<at::Tensor>& f, int64_t m) const override {
    return f[0].to(at::kFloat).view({kv_, m, d_});
  }

 private:
  int64_t kv_, d_;
  std::vector<RowField> fields_;
};

}  // namespace

RowCodecFamily fp16_codec_family() {
  return single_codec_family<FloatCoder<at::kHalf>>("fp16", 1, /*listed=*/false);
}
RowCodecFamily bf16_codec_family() {
  return single_codec_family<FloatCoder<at::kBFloat16>>("bf16", 1, /*listed=*/false);
}

}  // namespace detail
}  // namespace spindlekv
