// Fuzzes CompressedCache::load, the saved cache an engine may read back
// after a restart: the input is the file's bytes (safetensors, our own
// parser). A load must succeed or be refused with a clear spindlekv::Error;
// a loaded cache must then decode a step and report its memory without
// crashing, reading out of bounds or failing inside LibTorch.
//
// Seeds: run the binary with SPINDLEKV_FUZZ_WRITE_SEEDS=DIR to write saved
// caches of several codecs and codebook modes into DIR (scripts/fuzz.sh).
#include <ATen/ATen.h>

#include <cstdlib>
#include <string>

#include "core/error.h"
#include "fuzz_util.h"
#include "runtime/compressed_cache.h"

namespace {

using namespace spindlekv;

CacheGeometry geometry() {
  CacheGeometry g;
  g.num_layers = 2;
  g.num_heads = 4;
  g.num_kv_heads = 2;
  g.head_dim = 32;  // q4_0 and q8_0 code blocks of 32
  return g;
}

// One decode step of every sequence through every layer.
void decode_step(CompressedCache& cache) {
  const CacheGeometry g = geometry();
  const int64_t B = cache.batch_size();
  at::Tensor positions = at::empty({B, 1}, at::kLong);
  for (int64_t b = 0; b < B; ++b) positions[b][0] = cache.next_position(b);
  for (int64_t l = 0; l < g.num_layers; ++l) {
    cache.append_and_attend(l, at::randn({B, g.num_heads, 1, g.head_dim}),
                            at::randn({B, g.num_kv_heads, 1, g.head_dim}),
                            at::randn({B, g.num_kv_heads, 1, g.head_dim}), positions);
  }
  cache.advance(1);
}

// A cache of 2 sequences (16 and 11 tokens) compressed with `p`, decoded 3 steps.
void write_seed(const std::string& path, const CompressionParameters& p) {
  const CacheGeometry g = geometry();
  at::manual_seed(3);
  CompressedCache cache(g, 2, p);
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t T = b == 0 ? 16 : 11;
    for (int64_t l = 0; l < g.num_layers; ++l) {
      at::Tensor base = at::randn({g.num_kv_heads, 3, g.head_dim});
      // Near-duplicate rows, so that codebook modes have entries to share.
      at::Tensor k = base.repeat({1, (T + 2) / 3, 1}).narrow(1, 0, T) +
                     0.05 * at::randn({g.num_kv_heads, T, g.head_dim});
      at::Tensor v = at::randn({g.num_kv_heads, T, g.head_dim});
      at::Tensor attn = at::softmax(at::randn({g.num_heads, p.window, T}), -1);
      cache.prefill(b, l, k, v, attn);
    }
  }
  for (int i = 0; i < 3; ++i) decode_step(cache);
  cache.save(path);
}

void write_seeds(const std::string& dir) {
  struct Seed {
    const char* name;
    CodebookMode codebook;
    double ratio;
    const char *key_codec, *value_codec;
  };
  const Seed seeds[] = {
      {"none", CodebookMode::kNone, 0.5, "none", "none"},
      {"jit", CodebookMode::kJustInTime, 0.5, "none", "none"},
      {"kivi4-q4_0", CodebookMode::kNone, 1.0, "kivi4", "q4_0"},
      {"tq3", CodebookMode::kNone, 0.5, "tq3", "tq3"},
      {"fp8-q8_0-jit", CodebookMode::kJustInTime, 0.5, "fp8", "q8_0"},
  };
  for (const Seed& s : seeds) {
    CompressionParameters p;
    p.reserve_ratio = s.ratio;
    p.budget = BudgetKind::kUniform;
    p.window = 4;
    p.codebook = s.codebook;
    p.key_threshold = p.value_threshold = 0.9;
    p.key_codec = s.key_codec;
    p.value_codec = s.value_codec;
    write_seed(dir + "/" + s.name + ".safetensors", p);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("SPINDLEKV_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, ".cache");
  try {
    CompressedCache cache = CompressedCache::load(path, geometry());
    // A valid cache may sit at any position below 2^31, but decoding there
    // needs a RoPE table of that many rows: past 2^20 only the load is tried.
    bool small = true;
    for (int64_t b = 0; b < cache.batch_size(); ++b)
      small = small && cache.next_position(b) < (1 << 20);
    at::manual_seed(4);
    if (small) decode_step(cache);
    cache.memory();
  } catch (const Error& e) {
    fuzz::expect_refusal(e);
  }
  return 0;
}
