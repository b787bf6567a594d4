// Prefill into a compressed cache: run the prompt through the model with the
// full cache (as SnapKV-style methods do), record each layer's pre-RoPE keys,
// values and the window queries' attention, then compress every layer.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "model/llama_model.h"
#include "runtime/compressed_cache.h"

namespace spindlekv {

/// A prompt's full-cache forward pass: every layer's pre-RoPE keys and
/// values, the attention of its last `attention_rows` queries, and the
/// logits of its last token [vocab].
struct PrefillCapture {
  ForwardCapture capture;
  at::Tensor tokens;  ///< the prompt [tokens] int64
  at::Tensor last_logits;
};
PrefillCapture capture_prefill(const LlamaModel& model, const std::vector<int64_t>& prompt,
                               int64_t attention_rows);

/// Compresses a captured prefill into sequence `sequence` of `cache`.
void compress_prefill(const PrefillCapture& prefill, CompressedCache& cache, int64_t sequence);

/// capture_prefill with the rows `cache`'s policy needs, then
/// compress_prefill: prefills sequence `sequence` of `cache` with `prompt`;
/// returns the logits of the prompt's last token [vocab] float32.
at::Tensor prefill_compressed(const LlamaModel& model, const std::vector<int64_t>& prompt,
                              CompressedCache& cache, int64_t sequence);

/// Greedy decoding of `max_new` tokens from a prefilled batch: each step
/// feeds every sequence its last token. `last_logits` [batch, vocab] are the
/// prefill's. Returns [batch][max_new] token ids.
std::vector<std::vector<int64_t>> decode_greedy(const LlamaModel& model, CompressedCache& cache,
                                                const at::Tensor& last_logits, int64_t max_new);

}  // namespace spindlekv
