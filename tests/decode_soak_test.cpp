// A long decode stays within the memory it accounts for and keeps decoding
// as a fresh cache would (issue #46): every codebook mode and two quantised
// row codecs, a batch prefilled and then decoded step by step. At each
// checkpoint the process's resident memory is checked against the growth of
// the cache's own accounting, and the cache is saved and loaded into a fresh
// one, which must decode the next step bit for bit as the long-lived one does.
//
// Quick by default (CI): batch 4, a 512-token prefill, 300 steps, a checkpoint
// every 100. SPINDLEKV_SOAK=long runs the size: batch 16, an
// 8192-token prefill, 10,000 steps, a checkpoint every 1,000 (the README's
// reliability section has its numbers).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "device_util.h"
#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"
#include "test_util.h"

namespace spindlekv {
namespace {

struct SoakSize {
  int64_t batch, prefill, steps, every;
};

SoakSize soak_size() {
  const char* e = std::getenv("SPINDLEKV_SOAK");
  if (e != nullptr && std::strcmp(e, "long") == 0) return {16, 8192, 10000, 1000};
  return {4, 512, 300, 100};
}

// The process's resident set, from /proc/self/statm.
int64_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

int64_t allocated_bytes(const MemoryReport& m) {
  int64_t n = 0;
  for (const LayerMemory& l : m.layers) n += l.allocated_bytes;
  return n;
}

struct Case {
  const char* name;
  CodebookMode codebook;
  const char* codec;
};

// K/V near 16 directions per layer and KV head, so that codebook modes both
// find entries and miss them (and so grow their just-in-time tables).
at::Tensor clustered(const at::Tensor& centers, int64_t tokens) {
  const int64_t kv = centers.size(0), C = centers.size(1), d = centers.size(2);
  at::Tensor pick = at::randint(C, {kv, tokens}, at::kLong);
  at::Tensor x = at::gather(centers, 1, pick.unsqueeze(-1).expand({kv, tokens, d}));
  return x + 0.15 * at::randn({kv, tokens, d});
}

class DecodeSoak : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeSoak, MemoryStaysWithinItsAccountAndCheckpointsDecodeAsAFreshCache) {
  const SoakSize z = soak_size();
  at::set_num_threads(1);
  const ModelConfig c = testutil::tiny_config(4, 2, 32);
  const CacheGeometry g = c.geometry();
  auto artifact = testutil::random_artifact(c, 9);
  CompressionParameters p;
  p.reserve_ratio = 0.25;
  p.budget = BudgetKind::kUniform;
  p.window = 8;
  p.codebook = GetParam().codebook;
  p.key_threshold = p.value_threshold = 0.9;
  p.set_codec(GetParam().codec);
  const bool needs_artifact =
      p.codebook == CodebookMode::kCalibrated || p.codebook == CodebookMode::kHybrid;
  std::shared_ptr<const Artifact> a = needs_artifact ? artifact : nullptr;

  at::manual_seed(1);
  std::vector<at::Tensor> key_centers, value_centers;
  for (int64_t l = 0; l < g.num_layers; ++l) {
    key_centers.push_back(at::randn({g.num_kv_heads, 16, g.head_dim}));
    value_centers.push_back(at::randn({g.num_kv_heads, 16, g.head_dim}));
  }
  CompressedCache cache(g, z.batch, p, a);
  for (int64_t b = 0; b < z.batch; ++b) {
    for (int64_t l = 0; l < g.num_layers; ++l) {
      cache.prefill(b, l, clustered(key_centers[l], z.prefill),
                    clustered(value_centers[l], z.prefill),
                    at::softmax(at::randn({g.num_heads, p.window, z.prefill}), -1));
    }
  }
  // One step's inputs: the same for the long-lived cache and a fresh one.
  auto step = [&](CompressedCache& cc, int64_t s) {
    at::manual_seed(1000 + s);
    at::Tensor positions = at::empty({z.batch, 1}, at::kLong);
    for (int64_t b = 0; b < z.batch; ++b) positions[b][0] = cc.next_position(b);
    std::vector<at::Tensor> out;
    for (int64_t l = 0; l < g.num_layers; ++l) {
      at::Tensor k = at::stack(
          [&] {
            std::vector<at::Tensor> rows;
            for (int64_t b = 0; b < z.batch; ++b) rows.push_back(clustered(key_centers[l], 1));
            return rows;
          }(),
          0);
      at::Tensor v = 0.5 * at::randn({z.batch, g.num_kv_heads, 1, g.head_dim});
      out.push_back(cc.append_and_attend(l, at::randn({z.batch, g.num_heads, 1, g.head_dim}), k, v,
                                         positions));
    }
    cc.advance(1);
    return out;
  };

  testutil::TempDir dir;
  const std::string saved = dir.file("cache.safetensors");
  // The first checkpoint is the baseline: the step's transient workspace
  // (attention over the reconstructed layer) has been reached by then.
  int64_t rss0 = 0, alloc0 = 0, held0 = 0, tokens0 = 0;
  std::unique_ptr<CompressedCache> fresh;
  for (int64_t s = 1; s <= z.steps; ++s) {
    const std::vector<at::Tensor> out = step(cache, s);
    if (fresh) {
      const std::vector<at::Tensor> again = step(*fresh, s);
      for (size_t l = 0; l < out.size(); ++l) {
        ASSERT_TRUE(at::equal(out[l], again[l])) << "step " << s << ", layer " << l;
      }
      fresh.reset();
    }
    if (s % z.every != 0) continue;
    const MemoryReport m = cache.memory();
    const int64_t rss = resident_bytes(), alloc = allocated_bytes(m);
    const int64_t tokens = cache.next_position(0);
    if (rss0 == 0) {
      rss0 = rss;
      alloc0 = alloc;
      held0 = m.held_bytes;
      tokens0 = tokens;
    }
    // Resident memory grows with what the cache holds (its buffers double,
    // so allocated, not held) plus the step's workspace, which grows with
    // the context: the dense float32 K and V of one layer of the batch, and
    // its attention scores, for the tokens added since the baseline; and
    // 32 MiB of allocator slack. A leak of a step's temporaries grows faster.
    const int64_t added = tokens - tokens0;
    const int64_t workspace =
        2 * z.batch * added * (2 * g.num_kv_heads * g.head_dim + g.num_heads) * 4;
    const int64_t bound = (alloc - alloc0) + workspace + (int64_t{32} << 20);
    EXPECT_LE(rss - rss0, bound) << GetParam().name << " step " << s << ": resident grew "
                                 << (rss - rss0) << " B, allocated " << (alloc - alloc0)
                                 << " B, held " << (m.held_bytes - held0) << " B";
    // What is allocated stays within twice what is stored (buffers double),
    // plus a few KiB per tensor. Stored: what is held, and, without a
    // codebook, the code and magnitude per slot for K and for V that the
    // runtime keeps but does not charge (an eviction-only engine would not).
    int64_t uncharged = 0;
    if (p.codebook == CodebookMode::kNone) {
      for (const LayerMemory& l : m.layers) {
        uncharged +=
            2 * l.slots *
            (storage::code_bytes(p.storage_dtype) + storage::magnitude_bytes(p.storage_dtype));
      }
    }
    EXPECT_LE(alloc, 2 * (m.held_bytes + uncharged) + (int64_t{4} << 20))
        << GetParam().name << " step " << s;
    std::printf(
        "[soak] %s step %lld tokens %lld: rss %+.1f MiB, allocated %+.1f MiB, held "
        "%+.1f MiB (%.1f MiB in all), ratio %.3f\n",
        GetParam().name, static_cast<long long>(s), static_cast<long long>(tokens),
        (rss - rss0) / 1048576.0, (alloc - alloc0) / 1048576.0, (m.held_bytes - held0) / 1048576.0,
        m.held_bytes / 1048576.0, m.ratio_excluding_shared);
    if (s < z.steps) {
      cache.save(saved);
      fresh = std::make_unique<CompressedCache>(CompressedCache::load(saved, g, a));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryCodebookModeAndQuantisedRows, DecodeSoak,
                         ::testing::Values(Case{"none", CodebookMode::kNone, "none"},
                                           Case{"calibrated", CodebookMode::kCalibrated, "none"},
                                           Case{"jit", CodebookMode::kJustInTime, "none"},
                                           Case{"hybrid", CodebookMode::kHybrid, "none"},
                                           Case{"kivi4", CodebookMode::kNone, "kivi4"},
                                           Case{"tq3", CodebookMode::kNone, "tq3"}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return std::string(i.param.name);
                         });

}  // namespace
}  // namespace spindlekv
