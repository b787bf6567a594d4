// An engine may run one cache per thread over one shared artifact
// (compressed_cache.h, "Threads"): several threads prefill and decode their
// own caches at once, and each must produce exactly what it produces alone.
// scripts/sanitize.sh tsan runs this under ThreadSanitizer.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "device_util.h"
#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"
#include "test_util.h"

namespace spindlekv {
namespace {

// Every codebook mode and the row codecs with tables or state of their own.
struct Config {
  CodebookMode codebook;
  const char* codec;
};
const Config kConfigs[] = {
    {CodebookMode::kNone, "none"},           {CodebookMode::kCalibrated, "kivi4"},
    {CodebookMode::kJustInTime, "none"},     {CodebookMode::kHybrid, "tq3"},
    {CodebookMode::kNone, "tq2.5"},          {CodebookMode::kNone, "q4_0"},
    {CodebookMode::kNone, "fp8-calibrated"},
};

// The run of worker `w`: its own cache, inputs from its own generator; the
// attention outputs of every decode step, concatenated.
at::Tensor run(int w, const CacheGeometry& g, const std::shared_ptr<const Artifact>& artifact) {
  const Config& cfg = kConfigs[w % (sizeof(kConfigs) / sizeof(kConfigs[0]))];
  CompressionParameters p;
  p.reserve_ratio = 0.5;
  p.budget = BudgetKind::kUniform;
  p.window = 4;
  p.codebook = cfg.codebook;
  p.key_threshold = p.value_threshold = 0.3;
  p.set_codec(cfg.codec);
  at::Generator gen = at::detail::createCPUGenerator(100 + w);
  auto randn = [&](at::IntArrayRef shape) { return at::randn(shape, gen); };
  CompressedCache cache(g, 2, p, artifact);
  const int64_t T = 40;
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t l = 0; l < g.num_layers; ++l) {
      cache.prefill(b, l, randn({g.num_kv_heads, T, g.head_dim}),
                    randn({g.num_kv_heads, T, g.head_dim}),
                    at::softmax(randn({g.num_heads, p.window, T}), -1));
    }
  }
  std::vector<at::Tensor> outs;
  for (int64_t s = 0; s < 24; ++s) {
    at::Tensor positions = at::full({2, 1}, T + s, at::kLong);
    for (int64_t l = 0; l < g.num_layers; ++l) {
      outs.push_back(cache
                         .append_and_attend(l, randn({2, g.num_heads, 1, g.head_dim}),
                                            randn({2, g.num_kv_heads, 1, g.head_dim}),
                                            randn({2, g.num_kv_heads, 1, g.head_dim}), positions)
                         .reshape({-1}));
    }
    cache.advance(1);
  }
  outs.push_back(at::tensor({cache.memory().held_bytes}, at::kLong).to(at::kFloat));
  return at::cat(outs, 0);
}

TEST(CacheThreads, CachesOverOneSharedArtifactDecodeConcurrentlyAsTheyDoAlone) {
  // LibTorch's own intra-op pool stays out of it: the threads are the engine's.
  at::set_num_threads(1);
  const ModelConfig c = testutil::tiny_config(4, 2, 32);
  const CacheGeometry g = c.geometry();
  std::shared_ptr<Artifact> a = testutil::random_artifact(c, 11);
  // fp8-calibrated reads the artifact's scales.
  for (ArtifactLayer& L : a->layers) {
    L.fp8_key_scale = at::full({c.num_kv_heads}, 0.01f);
    L.fp8_value_scale = at::full({c.num_kv_heads}, 0.01f);
  }
  const std::shared_ptr<const Artifact> artifact = a;
  constexpr int kWorkers = 7;
  // Together first, so that whatever is set up once per process (codec
  // tables, registries) is set up under contention.
  std::vector<at::Tensor> alone, together(kWorkers);
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kWorkers);
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      try {
        together[w] = run(w, g, artifact);
      } catch (const std::exception& e) {
        errors[w] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int w = 0; w < kWorkers; ++w) alone.push_back(run(w, g, artifact));
  for (int w = 0; w < kWorkers; ++w) {
    ASSERT_TRUE(errors[w].empty()) << "worker " << w << ": " << errors[w];
    EXPECT_TRUE(at::equal(alone[w], together[w])) << "worker " << w;
  }
}

}  // namespace
}  // namespace spindlekv
