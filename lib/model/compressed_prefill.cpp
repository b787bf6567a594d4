#include "model/compressed_prefill.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/error.h"

namespace spindlekv {

PrefillCapture capture_prefill(const LlamaModel& model, const std::vector<int64_t>& prompt,
                               int64_t attention_rows) {
  SKV_CHECK(!prompt.empty(), "empty prompt");
  const int64_t T = static_cast<int64_t>(prompt.size());
  PrefillCapture p;
  p.capture.pre_rope_kv = true;
  p.capture.attention_rows = std::min(attention_rows, T);
  at::Tensor tokens = at::tensor(prompt, at::kLong).view({1, T});
  p.tokens = tokens.view({-1});
  p.last_logits = model.forward(tokens, nullptr, &p.capture, /*last_logits_only=*/true).view({-1});
  return p;
}

void compress_prefill(const PrefillCapture& prefill, CompressedCache& cache, int64_t sequence) {
  const ForwardCapture& capture = prefill.capture;
  for (size_t l = 0; l < capture.out.size(); ++l) {
    const ForwardCapture::Layer& out = capture.out[l];
    cache.prefill(sequence, static_cast<int64_t>(l), out.keys_pre_rope[0], out.values[0],
                  out.attention.defined() ? out.attention[0] : at::Tensor(), prefill.tokens);
  }
}

at::Tensor prefill_compressed(const LlamaModel& model, const std::vector<int64_t>& prompt,
                              CompressedCache& cache, int64_t sequence) {
  const int64_t T = static_cast<int64_t>(prompt.size());
  const int64_t window = std::min<int64_t>(cache.parameters().window, T);
  const int64_t rows =
      cache.parameters().reserve_ratio >= 1 ? 0 : cache.policy().attention_rows(T, window);
  PrefillCapture p = capture_prefill(model, prompt, rows);
  compress_prefill(p, cache, sequence);
  return p.last_logits;
}

std::vector<std::vector<int64_t>> decode_greedy(const LlamaModel& model, CompressedCache& cache,
                                                const at::Tensor& last_logits, int64_t max_new) {
  const int64_t B = cache.batch_size();
  SKV_CHECK(last_logits.dim() == 2 && last_logits.size(0) == B, "last logits must be [", B,
            ", vocab]");
  std::vector<std::vector<int64_t>> out(B);
  at::Tensor next = last_logits.argmax(-1);  // [B]
  for (int64_t step = 0; step < max_new; ++step) {
    at::Tensor ids = next.to(at::kCPU);
    for (int64_t b = 0; b < B; ++b) out[b].push_back(ids[b].item<int64_t>());
    if (step + 1 == max_new) break;
    // The ids just read: checked on the host, so the step waits for nothing.
    at::Tensor logits = model.forward_with_cache(ids.view({B, 1}), cache, true);
    next = logits.view({B, -1}).argmax(-1);
  }
  return out;
}

}  // namespace spindlekv
