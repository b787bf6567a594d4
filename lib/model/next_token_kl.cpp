#include "model/next_token_kl.h"

#include <ATen/ATen.h>

#include "core/error.h"

namespace spindlekv {

at::Tensor next_token_kl(const at::Tensor& ref_logits, const at::Tensor& test_logits) {
  SKV_CHECK(ref_logits.dim() == 2 && ref_logits.sizes() == test_logits.sizes(),
            "next-token KL needs two [M, vocab] logit tensors of one shape, got ",
            ref_logits.sizes(), " and ", test_logits.sizes());
  const at::Tensor p = at::log_softmax(ref_logits.to(at::kDouble), -1);
  const at::Tensor q = at::log_softmax(test_logits.to(ref_logits.device(), at::kDouble), -1);
  return (p.exp() * (p - q)).sum(-1).clamp_min(0.0);
}

}  // namespace spindlekv
