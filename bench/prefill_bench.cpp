// Prefill throughput of the LibTorch decoder against a plain sgemm measured in
// the same run (these machines are noisy: only the ratios are meaningful).
// Also times the forward's matrix products alone, at the same shapes, so that a
// slow BLAS cannot flatter the ratio: "GEMMs alone" says how much of the
// forward is the BLAS and how much everything around it.
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

#include "core/blas_kernels.h"
#include "core/memory_policy.h"
#include "core/threads.h"
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
  spindlekv::fix_blas_kernels(argc, argv);
  spindlekv::keep_freed_memory_mapped();  // as the CLI does (core/memory_policy.h)
  int64_t tokens = 2048, layers = 8, hidden = 1024;
  int threads = 0, reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-blas-fix") continue;
    if (i + 1 >= argc) {
      std::fprintf(stderr, "option %s needs a value\n", a.c_str());
      return 2;
    }
    const int64_t v = std::atoll(argv[++i]);
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
  spindlekv::configure_threads(threads);
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
  const int64_t H = hidden, I = c.intermediate_size, qo = c.num_heads * 64,
                kvo = c.num_kv_heads * 64, T = tokens;

  // Reference: one sgemm the size of the MLP's up projection.
  at::Tensor a = at::randn({T, H}), b = at::randn({H, I});
  const double gemm_s = seconds_best_of(reps, [&] { at::matmul(a, b); });
  const double gemm_gflops = 2.0 * T * H * I / gemm_s / 1e9;

  // The forward's projections alone: the same GEMMs, nothing between them.
  at::Tensor xh = at::randn({T, H}), xq = at::randn({T, qo}), xi = at::randn({T, I});
  at::Tensor w_q = at::randn({qo, H}), w_kv = at::randn({kvo, H}), w_o = at::randn({H, qo}),
             w_i = at::randn({I, H}), w_d = at::randn({H, I}), w_lm = at::randn({c.vocab_size, H});
  const double gemms_s = seconds_best_of(reps, [&] {
    for (int64_t l = 0; l < layers; ++l) {
      at::linear(xh, w_q), at::linear(xh, w_kv), at::linear(xh, w_kv), at::linear(xq, w_o);
      at::linear(xh, w_i), at::linear(xh, w_i), at::linear(xi, w_d);
    }
    at::linear(xh, w_lm);
  });

  model.forward(input.narrow(1, 0, 16));  // warm-up
  const double fwd_s = seconds_best_of(reps, [&] { model.forward(input); });
  // Useful FLOPs: projections, the causal half of the score and value
  // products (T (T + 1) / 2 query-key pairs), and the LM head.
  const double Td = static_cast<double>(T);
  const double proj = 2 * Td * (H * qo + 2 * H * kvo + qo * H + 3.0 * H * I);
  const double attn = 2 * 2 * (Td * (Td + 1) / 2) * qo;
  const double flops = layers * (proj + attn) + 2 * Td * H * c.vocab_size;
  const double model_gflops = flops / fwd_s / 1e9;

  std::printf("machine            %s\n", spindlekv::compute_environment().c_str());
  std::printf("config             d=%lld layers=%lld heads=%lld kv_heads=%lld tokens=%lld\n",
              (long long)hidden, (long long)layers, (long long)c.num_heads,
              (long long)c.num_kv_heads, (long long)tokens);
  std::printf("sgemm              %.1f GFLOP/s (%lldx%lldx%lld)\n", gemm_gflops, (long long)T,
              (long long)H, (long long)I);
  std::printf("prefill            %.2f s, %.0f tokens/s, %.1f GFLOP/s (causal FLOPs)\n", fwd_s,
              Td / fwd_s, model_gflops);
  std::printf("GEMMs alone        %.2f s: projections are %.0f%% of the forward's time\n", gemms_s,
              100.0 * gemms_s / fwd_s);
  std::printf("ratio              %.2f of sgemm (target >= 0.60) [%s]\n",
              model_gflops / gemm_gflops, spindlekv::openblas_core_name().c_str());
  return 0;
}
