// Prefill throughput of the LibTorch decoder against a plain sgemm measured in
// the same run (these machines are noisy: only the ratio is meaningful).
//
// Usage: prefill_bench [--tokens N] [--layers N] [--hidden N] [--threads N] [--reps N]
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "common/threads.h"
#include "model/llama_model.h"

namespace {

double seconds_best_of(int reps, const std::function<void()>& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 2048, layers = 8, hidden = 1024;
  int threads = 0, reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (a == "--tokens")
      tokens = v;
    else if (a == "--layers")
      layers = v;
    else if (a == "--hidden")
      hidden = v;
    else if (a == "--threads")
      threads = static_cast<int>(v);
    else if (a == "--reps")
      reps = static_cast<int>(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const int used_threads = spindlekv::configure_threads(threads);
  c10::InferenceMode guard;

  spindlekv::ModelConfig c;
  c.vocab_size = 256;
  c.hidden_size = hidden;
  c.intermediate_size = hidden * 11 / 4;
  c.num_layers = layers;
  c.num_heads = hidden / 64;
  c.num_kv_heads = std::max<int64_t>(1, c.num_heads / 4);
  c.head_dim = 64;
  c.max_position_embeddings = tokens;
  spindlekv::LlamaModel model = spindlekv::LlamaModel::random(c, 1);
  at::Tensor input = at::randint(0, c.vocab_size, {1, tokens}, at::kLong);

  // Reference: one sgemm the size of the MLP's up projection.
  at::Tensor a = at::randn({tokens, hidden}), b = at::randn({hidden, c.intermediate_size});
  const double gemm_s = seconds_best_of(reps, [&] { at::matmul(a, b); });
  const double gemm_gflops = 2.0 * tokens * hidden * c.intermediate_size / gemm_s / 1e9;

  model.forward(input.narrow(1, 0, 16));  // warm-up
  const double fwd_s = seconds_best_of(reps, [&] { model.forward(input); });
  // FLOPs actually executed: projections, the full (masked) score and value
  // products, and the LM head.
  const double H = hidden, I = c.intermediate_size, qo = c.num_heads * 64.0,
               kvo = c.num_kv_heads * 64.0, T = tokens;
  const double per_layer = 2 * T * (H * qo + 2 * H * kvo + qo * H + 3 * H * I) + 2 * 2 * T * T * qo;
  const double flops = layers * per_layer + 2 * T * H * c.vocab_size;
  const double model_gflops = flops / fwd_s / 1e9;

  std::printf("threads            %d\n", used_threads);
  std::printf("config             d=%lld layers=%lld heads=%lld kv_heads=%lld tokens=%lld\n",
              (long long)hidden, (long long)layers, (long long)c.num_heads,
              (long long)c.num_kv_heads, (long long)tokens);
  std::printf("sgemm              %.1f GFLOP/s (%lldx%lldx%lld)\n", gemm_gflops, (long long)tokens,
              (long long)hidden, (long long)c.intermediate_size);
  std::printf("prefill            %.2f s, %.0f tokens/s, %.1f GFLOP/s\n", fwd_s, T / fwd_s,
              model_gflops);
  std::printf("ratio              %.2f of sgemm (target >= 0.60)\n", model_gflops / gemm_gflops);
  return 0;
}
