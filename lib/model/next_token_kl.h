// How far a compressed cache moves a model's predictions: the KL divergence
// KL(P_ref || P_test) of next-token distributions, position by position, as
// llama.cpp's --kl-divergence reports it. Logits [M, vocab], any floating
// dtype; computed in float64.
#pragma once

#include <ATen/Tensor.h>

namespace spindlekv {

/// KL(softmax(ref[i]) || softmax(test[i])) for every row i, in nats: [M]
/// float64 on ref's device. Throws kInvalidInput when the shapes differ.
at::Tensor next_token_kl(const at::Tensor& ref_logits, const at::Tensor& test_logits);

}  // namespace spindlekv
