// An inference loop over a compressed KV cache built
// with an exported artifact. Usage: inference_loop MODEL_DIR ARTIFACT PROMPT
#include <ATen/ATen.h>

#include <cstdio>
#include <string>

#include "core/model_fingerprint.h"
#include "model/compressed_prefill.h"
#include "runtime/artifact.h"

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  using namespace spindlekv;
  // --- README example begins ---
  LlamaModel model = LlamaModel::load(argv[1]);
  auto artifact = std::make_shared<Artifact>(
      load_artifact_for_model(argv[2], fingerprint_model(argv[1]).to_string()));
  CompressionParameters params;  // paper defaults: repeat GQA, theta 0.98 / 0.95
  params.reserve_ratio = 0.7;    // tokens kept before codebooks
  params.budget = BudgetKind::kCalibrated;
  params.codebook = CodebookMode::kCalibrated;  // or kJustInTime, kHybrid, kNone
  CompressedCache cache(model.config().geometry(), /*batch=*/1, params, artifact);
  std::vector<int64_t> prompt{*model.config().bos_token_id};
  for (unsigned char c : std::string(argv[3])) prompt.push_back(c);  // byte-level model
  at::Tensor logits = prefill_compressed(model, prompt, cache, /*sequence=*/0);
  std::string answer;
  for (int step = 0; step < 5; ++step) {  // greedy decoding over the compressed cache
    const int64_t next = logits.argmax().item<int64_t>();
    answer += static_cast<char>(next);
    logits = model.forward_with_cache(at::full({1, 1}, next, at::kLong), cache).view({-1});
  }
  std::printf("answer '%s', memory ratio %.3f\n", answer.c_str(), cache.memory().ratio);
  // --- README example ends ---
  return 0;
}
