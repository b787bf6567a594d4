// An engine-side use of the runtime alone: its own model produced pre-RoPE
// keys/values and window attention (random here); the cache evicts as
// snapkv-mean does (uniform budgets, scores averaged over each KV head's
// group, pooled over 7 neighbours), codes the kept rows with tq3, and attends
// for a decoded token. This is the README's engine example.
#include <ATen/ATen.h>

#include <cstdio>

#include "spindlekv/runtime.h"

int main() {
  // --- README example begins ---
  spindlekv::CacheGeometry geometry;  // what the engine knows of its model
  geometry.num_layers = 2;
  geometry.num_heads = 8;
  geometry.num_kv_heads = 2;
  geometry.head_dim = 32;
  spindlekv::CompressionParameters params;  // snapkv-mean+tq3 of the eval
  params.reserve_ratio = 0.25;              // tokens kept
  params.budget = spindlekv::BudgetKind::kUniform;
  params.gqa = spindlekv::GqaMode::kGroupAverage;
  params.codebook = spindlekv::CodebookMode::kNone;  // eviction only, no codebook
  params.set_codec("tq3");  // or an artifact's codec plan ("plan2.5"), given the artifact
  spindlekv::CompressedCache cache(geometry, /*batch=*/1, params);
  cache.set_policy(std::make_shared<spindlekv::WindowAttentionPolicy>(
      spindlekv::GqaMode::kGroupAverage, /*pooling_kernel=*/7));
  // --- README example ends ---
  const int64_t T = 256;
  at::manual_seed(0);
  at::Tensor centres = at::randn({2, 8, 32});
  for (int64_t layer = 0; layer < 2; ++layer) {
    at::Tensor keys = centres.repeat({1, T / 8, 1}) + 0.01 * at::randn({2, T, 32});
    at::Tensor values = centres.repeat({1, T / 8, 1}) + 0.01 * at::randn({2, T, 32});
    at::Tensor attention = at::softmax(at::randn({8, 32, T}), -1);
    cache.prefill(0, layer, keys, values, attention);
  }
  at::Tensor out =
      cache.append_and_attend(0, at::randn({1, 8, 1, 32}), at::randn({1, 2, 1, 32}),
                              at::randn({1, 2, 1, 32}), at::full({1, 1}, T, at::kLong));
  const spindlekv::MemoryReport m = cache.memory();
  std::printf("attention output %lld values; memory ratio %.3f (%lld of %lld bytes)\n",
              static_cast<long long>(out.numel()), m.ratio, static_cast<long long>(m.held_bytes),
              static_cast<long long>(m.full_bytes));
  return out.numel() == 8 * 32 && m.ratio < 0.15 ? 0 : 1;
}
