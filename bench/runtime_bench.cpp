// Speed of the compressed KV cache against references measured in the same
// run (only the ratios are meaningful on a noisy machine):
//   1. compression of one layer of an 8k-token prefill (calibrated, just in
//      time, hybrid) next to that layer's prefill attention (target:
//      calibrated at most 5%);
//   2. the just-in-time builder (Algorithm 1, O(n^2)) next to the algorithm
//      as printed (O(n^3)) on the same vectors (target: at least 10x faster);
//   3. a decode step over the compressed cache next to one over a
//      preallocated full cache (target: at most full x (memory ratio + 0.1));
//   4. bytes per token and the decode step per storage dtype;
//   5. every row codec of the registry (fp8, kivi, TurboQuant, q8_0, q4_0),
//      alone (every token kept), under eviction and under SpindleKV: bytes
//      per token, the prefill's encode next to the layer's prefill
//      attention, and the decode step next to the float16 full cache's.
// K/V vectors are synthetic: 85% lie near one of the calibrated codebook's
// directions, the rest are random; query heads of a group share most of
// their query (so their attention overlaps, as in trained models).
//
// Usage: runtime_bench [--tokens N] [--heads N] [--kv-heads N] [--head-dim N]
//                      [--codewords N] [--reserve R] [--naive-n N] [--threads N]
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

#include "core/blas_kernels.h"
#include "core/memory_policy.h"
#include "core/model_config.h"
#include "core/rope.h"
#include "core/threads.h"
#include "model/attention.h"
#include "runtime/artifact.h"
#include "runtime/codebook_builder.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/jit_reference.h"
#include "runtime/row_codec.h"
#include "runtime/storage_cost.h"

using namespace spindlekv;

namespace {

double seconds(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// [kv, T, d]: 85% within a small angle of one of the centres, 15% random.
at::Tensor clustered(const at::Tensor& centres, int64_t T, double noise) {
  const int64_t kv = centres.size(0), K = centres.size(1), d = centres.size(2);
  at::Tensor pick = at::randint(K, {kv, T}, at::kLong);
  at::Tensor base = centres.gather(1, pick.unsqueeze(2).expand({kv, T, d}));
  at::Tensor x = base + noise * at::randn({kv, T, d});
  at::Tensor random = at::randn({kv, T, d}) / std::sqrt(static_cast<double>(d));
  at::Tensor use_random = at::rand({kv, T, 1}) < 0.15;
  at::Tensor mags = 0.5 + at::rand({kv, T, 1}) * 2;
  x = at::where(use_random, random, x);
  return x / x.norm(2, -1, true) * mags;
}

}  // namespace

int main(int argc, char** argv) {
  spindlekv::fix_blas_kernels(argc, argv);  // SPINDLEKV_NO_BLAS_FIX=1 turns it off
  spindlekv::keep_freed_memory_mapped();    // as the CLI does (core/memory_policy.h)
  int64_t T = 8192, heads = 32, kv = 8, d = 128, K = 1024, naive_n = 1536, steps = 32;
  double reserve = 0.2;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const char* v = argv[i + 1];
    if (a == "--tokens")
      T = std::atoll(v);
    else if (a == "--heads")
      heads = std::atoll(v);
    else if (a == "--kv-heads")
      kv = std::atoll(v);
    else if (a == "--head-dim")
      d = std::atoll(v);
    else if (a == "--codewords")
      K = std::atoll(v);
    else if (a == "--reserve")
      reserve = std::atof(v);
    else if (a == "--naive-n")
      naive_n = std::atoll(v);
    else if (a == "--threads")
      threads = std::atoi(v);
    else if (a == "--steps")
      steps = std::atoll(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const int used = configure_threads(threads);
  std::printf("machine          %s\n", spindlekv::compute_environment().c_str());
  c10::InferenceMode guard;
  at::manual_seed(0);
  ModelConfig c;
  c.vocab_size = 32;
  c.hidden_size = heads * d;
  c.intermediate_size = 64;
  c.num_layers = 1;
  c.num_heads = heads;
  c.num_kv_heads = kv;
  c.head_dim = d;
  c.max_position_embeddings = T + steps + 1;
  const int64_t window = 32;

  at::Tensor kc = at::randn({kv, K, d}), vc = at::randn({kv, K, d});
  kc /= kc.norm(2, -1, true);
  vc /= vc.norm(2, -1, true);
  auto artifact = std::make_shared<Artifact>();
  artifact->num_layers = 1;
  artifact->num_heads = heads;
  artifact->num_kv_heads = kv;
  artifact->head_dim = d;
  artifact->layers.push_back({kc, vc, std::vector<int64_t>(kv, K), std::vector<int64_t>(kv, K),
                              std::vector<double>(kv, 0.85), std::vector<double>(kv, 0.85)});
  artifact->pyramid.context_ratios = {0.0, 1.0};
  artifact->pyramid.fractions = {{0.0}, {1.0}};
  artifact->calibrated = artifact->pyramid;
  // Noise small enough that clustered vectors sit above theta_K = 0.98.
  const double noise = 0.08 / std::sqrt(static_cast<double>(d));
  at::Tensor keys = clustered(kc, T, noise), values = clustered(vc, T, noise);

  // 1. The layer's prefill attention (queries of every position, window rows kept).
  // Query heads of a group look for similar things (as in trained models):
  // a shared query plus a smaller per-head part.
  at::Tensor q = (at::randn({1, kv, 1, T, d}).expand({1, kv, heads / kv, T, d}) +
                  0.5 * at::randn({1, kv, heads / kv, T, d}))
                     .reshape({1, heads, T, d}) *
                 2.0;
  at::Tensor pos = at::arange(T, at::kLong);
  RopeTables rope = rope_tables(rope_inverse_frequencies(c.rope, d), pos);
  at::Tensor k_rot = apply_rope(keys.unsqueeze(0), rope);
  AttentionResult att;
  const double t_attention = seconds(
      [&] { att = grouped_query_attention(q, k_rot, values.unsqueeze(0), pos, pos, 0, window); });
  at::Tensor window_att = att.probabilities[0];
  std::printf(
      "runtime_bench: %lld tokens, %lld heads / %lld KV heads, head_dim %lld, %lld "
      "codewords per KV head, reserve %.2f, %d threads\n",
      (long long)T, (long long)heads, (long long)kv, (long long)d, (long long)K, reserve, used);
  std::printf("prefill attention of one layer: %.3f s\n", t_attention);

  auto make = [&](CodebookMode mode, StorageDtype dtype = StorageDtype::kFloat32,
                  const std::string& codec = "none", double keep = -1) {
    CompressionParameters p;
    p.reserve_ratio = keep > 0 ? keep : reserve;
    p.budget = BudgetKind::kUniform;
    p.window = window;
    p.codebook = mode;
    p.storage_dtype = dtype;
    p.set_codec(codec);
    return std::make_unique<CompressedCache>(c.geometry(), 1, p, artifact);
  };
  std::unique_ptr<CompressedCache> calibrated;
  for (CodebookMode mode :
       {CodebookMode::kCalibrated, CodebookMode::kJustInTime, CodebookMode::kHybrid}) {
    auto cache = make(mode);
    const double t = seconds([&] { cache->prefill(0, 0, keys, values, window_att); });
    const MemoryReport m = cache->memory();
    std::printf("compression, %-10s: %.3f s = %5.1f%% of the attention%s; memory ratio %.3f\n",
                to_string(mode), t, 100 * t / t_attention,
                mode == CodebookMode::kCalibrated
                    ? (t / t_attention <= 0.05 ? " (target <= 5%: met)" : " (target <= 5%: MISSED)")
                    : "",
                m.ratio);
    if (mode == CodebookMode::kCalibrated) calibrated = std::move(cache);
  }

  // 2. Algorithm 1: O(n^2) builder against the printed O(n^3) loop.
  at::Tensor dirs = split_magnitude(keys[0].narrow(0, 0, naive_n)).first.contiguous();
  JitCodebook fast, naive;
  const double t_fast = seconds([&] { fast = build_jit_codebook(dirs, 0.98); });
  const double t_naive = seconds([&] { naive = build_jit_codebook_naive(dirs, 0.98); });
  std::printf(
      "Algorithm 1 on %lld vectors: %.4f s, naive %.3f s: %.1fx faster (target >= 10x: %s)%s\n",
      (long long)naive_n, t_fast, t_naive, t_naive / t_fast,
      t_naive / t_fast >= 10 ? "met" : "MISSED",
      at::equal(fast.index, naive.index) ? "" : " [results differ!]");

  // 3. Decode steps: compressed (calibrated) against a preallocated full cache.
  at::Tensor full_k = at::zeros({1, kv, T + steps, d}), full_v = at::zeros({1, kv, T + steps, d});
  full_k.narrow(2, 0, T).copy_(k_rot);
  full_v.narrow(2, 0, T).copy_(values.unsqueeze(0));
  at::Tensor all_pos = at::arange(T + steps, at::kLong);
  RopeTables all_rope = rope_tables(rope_inverse_frequencies(c.rope, d), all_pos);
  std::vector<at::Tensor> qs, ks, vs;
  for (int64_t s = 0; s < steps; ++s) {
    qs.push_back(at::randn({1, heads, 1, d}));
    ks.push_back(clustered(kc, 1, noise).unsqueeze(0));
    vs.push_back(clustered(vc, 1, noise).unsqueeze(0));
  }
  const double t_full =
      seconds([&] {
        for (int64_t s = 0; s < steps; ++s) {
          const int64_t n = T + s;
          RopeTables r{all_rope.cos.narrow(0, n, 1), all_rope.sin.narrow(0, n, 1)};
          full_k.narrow(2, n, 1).copy_(apply_rope(ks[s], r));
          full_v.narrow(2, n, 1).copy_(vs[s]);
          grouped_query_attention(qs[s], full_k.narrow(2, 0, n + 1), full_v.narrow(2, 0, n + 1),
                                  all_pos.narrow(0, n, 1), all_pos.narrow(0, 0, n + 1));
        }
      }) /
      steps;
  // Seconds per decode step over `cache`, the same steps for every cache.
  auto decode_step = [&](CompressedCache& cache) {
    return seconds([&] {
             for (int64_t s = 0; s < steps; ++s) {
               cache.append_and_attend(0, qs[s], ks[s], vs[s], at::full({1, 1}, T + s, at::kLong));
               cache.advance(1);
             }
           }) /
           steps;
  };
  const double t_comp = decode_step(*calibrated);
  const double ratio = calibrated->memory().ratio;
  const double target = t_full * (ratio + 0.1);
  std::printf(
      "decode step, one layer: full %.3f ms, compressed %.3f ms (%.2fx full); memory ratio "
      "%.3f, target <= %.3f ms: %s\n",
      1e3 * t_full, 1e3 * t_comp, t_comp / t_full, ratio, 1e3 * target,
      t_comp <= target ? "met" : "MISSED");

  // 4. Storage widths: bytes per token (held + shared charged) and the decode
  // step against the same full float32 cache, per storage dtype.
  for (StorageDtype dtype :
       {StorageDtype::kFloat32, StorageDtype::kFloat16, StorageDtype::kBFloat16}) {
    auto cache = make(CodebookMode::kCalibrated, dtype);
    cache->prefill(0, 0, keys, values, window_att);
    const MemoryReport m = cache->memory();
    const double t_step = decode_step(*cache);
    const double tokens = static_cast<double>(T + steps);
    std::printf(
        "storage %-8s: %.1f bytes per token and layer (dense %s: %lld), ratio %.3f; decode step "
        "%.3f ms (%.2fx the full float32 cache)\n",
        to_string(dtype), (m.held_bytes + m.shared_bytes_total) / tokens, to_string(dtype),
        (long long)(2 * kv * storage::vector_bytes(d, dtype)), m.ratio, 1e3 * t_step,
        t_step / t_full);
  }

  // 5. Row codecs (float16 tails and entries): the full cache coded, eviction
  // alone + codec, SpindleKV (calibrated) + codec. Bytes per token (shared
  // tables whole), the prefill (which encodes every kept row) against the
  // layer's prefill attention, and the decode step against the float16 full
  // cache ("full cache + none", measured first) and the full float32 one.
  std::vector<std::string> codecs = {"none"};
  for (const std::string& name : row_codec_names()) {
    if (!parse_row_codec(name)->needs_artifact()) codecs.push_back(name);  // no fp8 scales here
  }
  struct Variant {
    const char* name;
    CodebookMode mode;
    double keep;
  };
  double t_f16 = 0;
  for (const Variant& v : {Variant{"full cache", CodebookMode::kNone, 1.0},
                           Variant{"eviction", CodebookMode::kNone, -1},
                           Variant{"spindle", CodebookMode::kCalibrated, -1}}) {
    for (const std::string& codec : codecs) {
      auto cache = make(v.mode, StorageDtype::kFloat16, codec, v.keep);
      const double t_prefill = seconds([&] { cache->prefill(0, 0, keys, values, window_att); });
      const double t_step = decode_step(*cache);
      if (t_f16 == 0) t_f16 = t_step;
      const MemoryReport m = cache->memory();
      const double tokens = static_cast<double>(T + steps);
      std::printf(
          "%-10s + %-6s (float16): %.1f bytes per token and layer (dense float16: %lld), ratio "
          "%.3f; prefill %.3f s (%5.1f%% of the attention); decode step %.3f ms (%.2fx the "
          "float16 full cache, %.2fx the full float32 cache)\n",
          v.name, codec.c_str(), (m.held_bytes + m.shared_bytes_total) / tokens,
          (long long)(2 * kv * storage::vector_bytes(d, StorageDtype::kFloat16)), m.ratio,
          t_prefill, 100 * t_prefill / t_attention, 1e3 * t_step, t_step / t_f16, t_step / t_full);
    }
  }
  return 0;
}
