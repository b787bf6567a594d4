// An engine-side use of the runtime alone: its own model produced pre-RoPE
// keys/values and window attention (random here); SpindleKV's just-in-time
// mode compresses them and attends for a decoded token.
#include <ATen/ATen.h>

#include <cstdio>

#include "spindlekv/runtime.h"

int main() {
  spindlekv::CacheGeometry geometry;  // what the engine knows of its model
  geometry.num_layers = 2;
  geometry.num_heads = 8;
  geometry.num_kv_heads = 2;
  geometry.head_dim = 32;
  spindlekv::CompressionParameters params;
  params.reserve_ratio = 0.25;
  params.codebook = spindlekv::CodebookMode::kJustInTime;
  spindlekv::CompressedCache cache(geometry, /*batch=*/1, params);
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
  return out.numel() == 8 * 32 && m.ratio < 0.5 ? 0 : 1;
}
