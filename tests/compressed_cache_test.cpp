#include "runtime/compressed_cache.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/rope.h"
#include "core/safetensors_reader.h"
#include "core/safetensors_writer.h"
#include "device_util.h"
#include "model/compressed_prefill.h"
#include "model/llama_model.h"
#include "runtime/artifact.h"
#include "runtime/detail/cache_access.h"
#include "runtime/detail/compressed_storage.h"
#include "test_util.h"

namespace spindlekv {
namespace {

using testutil::random_artifact;
using testutil::TempDir;

std::vector<int64_t> text_tokens(const std::string& text) {
  std::vector<int64_t> out;
  for (unsigned char c : text) out.push_back(c);
  return out;
}

const std::string kText =
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a "
    "single step. The key is 48213. Remember it: 48213. ";

// Logits of greedy decoding with the model's own full cache: the prefill's
// last logits, then one row per decoded token.
std::vector<at::Tensor> full_cache_logits(const LlamaModel& m, const std::vector<int64_t>& prompt,
                                          int64_t steps) {
  KvCache kv;
  std::vector<at::Tensor> out;
  at::Tensor input = at::tensor(prompt, at::kLong).view({1, -1});
  for (int64_t s = 0; s <= steps; ++s) {
    at::Tensor logits = m.forward(input, &kv, nullptr, true).view({-1});
    out.push_back(logits);
    input = logits.argmax().view({1, 1});
  }
  return out;
}

std::vector<at::Tensor> compressed_logits(const LlamaModel& m, const std::vector<int64_t>& prompt,
                                          int64_t steps, CompressedCache& cache) {
  std::vector<at::Tensor> out{prefill_compressed(m, prompt, cache, 0)};
  for (int64_t s = 0; s < steps; ++s) {
    at::Tensor next = out.back().argmax().view({1, 1});
    out.push_back(m.forward_with_cache(next, cache).view({-1}));
  }
  return out;
}

TEST(CompressedCache, ReproducesFullCacheLogitsAtThresholdOneAndFullBudget) {
  const LlamaModel model =
      LlamaModel::load(std::string(SPINDLEKV_SOURCE_DIR) + "/data/reference-model");
  const std::vector<int64_t> prompt = text_tokens(kText + kText);
  const auto reference = full_cache_logits(model, prompt, 6);
  auto artifact = random_artifact(model.config(), 5);
  for (CodebookMode mode : {CodebookMode::kNone, CodebookMode::kCalibrated,
                            CodebookMode::kJustInTime, CodebookMode::kHybrid}) {
    CompressionParameters p;
    p.storage_dtype = StorageDtype::kFloat32;  // exact comparisons: the default is float16
    p.reserve_ratio = 1.0;
    p.codebook = mode;
    p.key_threshold = p.value_threshold = 1.0;
    CompressedCache cache(model.config().geometry(), 1, p, artifact);
    const auto got = compressed_logits(model, prompt, 6, cache);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(at::allclose(got[i], reference[i], 1e-4, 1e-4))
          << to_string(mode) << " step " << i << " max diff "
          << (got[i] - reference[i]).abs().max().item<double>();
    }
  }
}

// A tiny random model whose K/V vectors cluster (a few directions), so that
// codebooks at realistic thresholds replace many of them.
LlamaModel clustered_model(const ModelConfig& c) { return LlamaModel::random(c, 11, 0.3); }

TEST(CompressedCache, AttentionEqualsAttentionOverTheReconstructedDenseCache) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  for (const auto& [mode, dtype] : {std::pair{CodebookMode::kJustInTime, StorageDtype::kFloat32},
                                    std::pair{CodebookMode::kCalibrated, StorageDtype::kFloat32},
                                    std::pair{CodebookMode::kHybrid, StorageDtype::kFloat16},
                                    std::pair{CodebookMode::kNone, StorageDtype::kBFloat16}}) {
    CompressionParameters p;
    p.storage_dtype = dtype;
    p.reserve_ratio = 0.5;
    p.window = 4;
    p.codebook = mode;
    p.key_threshold = 0.5;  // lossy on purpose: most vectors become codes
    p.value_threshold = 0.5;
    CompressedCache cache(c.geometry(), 1, p, random_artifact(c, 2));
    at::manual_seed(4);
    const int64_t T = 40;
    for (int64_t l = 0; l < c.num_layers; ++l) {
      at::Tensor att = at::softmax(at::randn({4, 4, T}), -1);
      cache.prefill(0, l, at::randn({2, T, 8}), at::randn({2, T, 8}), att);
    }
    at::Tensor q = at::randn({1, 4, 2, 8}), k = at::randn({1, 2, 2, 8}),
               v = at::randn({1, 2, 2, 8});
    at::Tensor pos = at::tensor({T, T + 1}, at::kLong).view({1, 2});
    at::Tensor out = cache.append_and_attend(0, q, k, v, pos)[0];  // [heads, 2, d]
    detail::DenseLayer dense = detail::reconstruct_layer(cache, 0, 0);
    for (int64_t h = 0; h < 4; ++h) {
      const int64_t g = h / 2;
      for (int64_t i = 0; i < 2; ++i) {
        at::Tensor scores = at::mv(dense.keys[g], q[0][h][i]) / std::sqrt(8.0);
        at::Tensor visible =
            dense.visible[h] & (dense.positions[g] >= 0) & (dense.positions[g] <= T + i);
        scores = scores.masked_fill(visible.logical_not(), -INFINITY);
        at::Tensor expected = at::mv(dense.values[g].t(), at::softmax(scores, 0));
        EXPECT_TRUE(at::allclose(out[h][i], expected, 1e-5, 1e-5))
            << to_string(mode) << " " << to_string(dtype);
      }
    }
    if (mode != CodebookMode::kNone) {
      EXPECT_GT(cache.memory().layers[0].calibrated_vectors + cache.memory().layers[0].jit_vectors,
                0);
    }
  }
}

TEST(CompressedCache, ReconstructedVectorsStayWithinTheThreshold) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  CompressionParameters p;
  p.storage_dtype = StorageDtype::kFloat32;  // exact comparisons: the default is float16
  p.reserve_ratio = 1.0;
  p.codebook = CodebookMode::kJustInTime;
  p.key_threshold = 0.9;
  p.value_threshold = 0.8;
  CompressedCache cache(c.geometry(), 1, p);
  at::manual_seed(8);
  at::Tensor centres = at::randn({2, 3, 8});
  at::Tensor keys = centres.repeat({1, 10, 1}) + 0.1 * at::randn({2, 30, 8});
  at::Tensor values = centres.repeat({1, 10, 1}) + 0.3 * at::randn({2, 30, 8});
  cache.prefill(0, 0, keys, values, at::Tensor());
  detail::DenseLayer d = detail::reconstruct_layer(cache, 0, 0);
  RopeTables t = rope_tables(rope_inverse_frequencies(c.rope, 8), at::arange(30, at::kLong));
  at::Tensor rotated = apply_rope(keys, t);
  at::Tensor cos_k = (d.keys * rotated).sum(-1) / (d.keys.norm(2, -1) * rotated.norm(2, -1));
  at::Tensor cos_v = (d.values * values).sum(-1) / (d.values.norm(2, -1) * values.norm(2, -1));
  EXPECT_GT(cos_k.min().item<double>(), 0.9 - 1e-5);
  EXPECT_GT(cos_v.min().item<double>(), 0.8 - 1e-5);
  EXPECT_TRUE(at::allclose(d.keys.norm(2, -1), keys.norm(2, -1), 1e-5, 1e-5));  // magnitudes kept
  // Just in time, every vector is coded: 2 x 30 keys and values per KV head,
  // far fewer entries than vectors (3 clusters per head).
  const MemoryReport m = cache.memory();
  EXPECT_EQ(m.layers[0].jit_vectors, 2 * 60);
  EXPECT_EQ(m.layers[0].exact_vectors, 0);
  EXPECT_LT(m.layers[0].distinct_entries, 60 / 2);
}

TEST(CompressedCache, BatchOfDifferentLengthsEqualsEachSequenceAlone) {
  ModelConfig c = testutil::tiny_config(4, 2, 8);
  const LlamaModel model = clustered_model(c);
  CompressionParameters p;
  p.reserve_ratio = 0.5;
  p.window = 4;
  p.codebook = CodebookMode::kJustInTime;
  p.key_threshold = p.value_threshold = 0.9;
  std::vector<std::vector<int64_t>> prompts(2);
  for (int64_t i = 0; i < 30; ++i) prompts[0].push_back((i * 7) % 37);
  for (int64_t i = 0; i < 45; ++i) prompts[1].push_back((i * 5 + 3) % 37);
  CompressedCache batch(c.geometry(), 2, p);
  at::Tensor last = at::stack({prefill_compressed(model, prompts[0], batch, 0),
                               prefill_compressed(model, prompts[1], batch, 1)});
  EXPECT_EQ(batch.next_position(0), 30);
  EXPECT_EQ(batch.next_position(1), 45);
  std::vector<at::Tensor> alone_last;
  std::vector<std::unique_ptr<CompressedCache>> alone;
  for (int b = 0; b < 2; ++b) {
    alone.push_back(std::make_unique<CompressedCache>(c.geometry(), 1, p));
    alone_last.push_back(prefill_compressed(model, prompts[b], *alone.back(), 0));
  }
  for (int step = 0; step < 5; ++step) {
    at::Tensor next = last.argmax(-1);
    at::Tensor logits = model.forward_with_cache(next.view({2, 1}), batch).view({2, -1});
    for (int b = 0; b < 2; ++b) {
      at::Tensor one = model.forward_with_cache(next[b].view({1, 1}), *alone[b]).view({-1});
      EXPECT_TRUE(at::allclose(logits[b], one, 1e-5, 1e-5)) << "sequence " << b << " step " << step;
    }
    last = logits;
  }
  EXPECT_EQ(batch.next_position(1), 50);
}

TEST(CompressedCache, ByteAccountingMatchesAHandCount) {
  ModelConfig c = testutil::tiny_config(2, 1, 4);
  c.num_layers = 1;
  auto a = std::make_shared<Artifact>();
  a->num_layers = 1;
  a->num_heads = 2;
  a->num_kv_heads = 1;
  a->head_dim = 4;
  ArtifactLayer L;
  L.key_codebook = at::tensor({1.0f, 0.0f, 0.0f, 0.0f}).view({1, 1, 4});
  L.value_codebook = at::tensor({0.0f, 1.0f, 0.0f, 0.0f}).view({1, 1, 4});
  L.key_sizes = L.value_sizes = {1};
  L.key_coverage = L.value_coverage = {1.0};
  a->layers = {L};
  a->pyramid.context_ratios = {1.0};
  a->pyramid.fractions = {{1.0}};
  a->calibrated = a->pyramid;
  CompressionParameters p;
  p.storage_dtype = StorageDtype::kFloat32;  // exact comparisons: the default is float16
  p.reserve_ratio = 1.0;
  p.codebook = CodebookMode::kCalibrated;
  CompressedCache cache(c.geometry(), 1, p, a);
  // Keys: 3 along the key entry (scaled), 3 along e2. Values: 2 along the
  // value entry, 4 along e3.
  at::Tensor keys = at::zeros({1, 6, 4}), values = at::zeros({1, 6, 4});
  for (int i = 0; i < 3; ++i) keys[0][i][0] = i + 1.0, keys[0][i + 3][2] = 2.0;
  for (int i = 0; i < 6; ++i) values[0][i][i < 2 ? 1 : 3] = 0.5 + i;
  cache.prefill(0, 0, keys, values, at::Tensor());
  const LayerMemory m = cache.memory().layers[0];
  EXPECT_EQ(m.slots, 6);
  EXPECT_EQ(m.code_bytes, 2 * 6 * 4);
  EXPECT_EQ(m.magnitude_bytes, 2 * 6 * 4);
  EXPECT_EQ(m.position_bytes, 0);  // nothing evicted: positions are 0..5, implicit
  EXPECT_EQ(m.exact_bytes, (3 + 4) * 4 * 4);
  EXPECT_EQ(m.membership_bytes, 0);
  EXPECT_EQ(m.jit_entry_bytes, 0);
  EXPECT_EQ(m.held_bytes(), 48 + 48 + 112);
  EXPECT_EQ(m.full_bytes, 2 * 6 * 1 * 4 * 4);
  EXPECT_EQ(m.calibrated_vectors, 5);
  EXPECT_EQ(m.exact_vectors, 7);
  EXPECT_EQ(m.distinct_entries, (1 + 3) + (1 + 4));
  // The calibrated entries (one key, one value entry of 4 floats) are shared
  // by all requests; a request is charged the whole tables.
  const MemoryReport r = cache.memory();
  EXPECT_EQ(m.shared_entry_bytes, 2 * 4 * 4);
  EXPECT_EQ(r.shared_bytes_total, 2 * 4 * 4);
  EXPECT_EQ(r.shared_bytes_referenced, 2 * 4 * 4);
  EXPECT_DOUBLE_EQ(r.ratio_excluding_shared, 208.0 / 192.0);
  EXPECT_DOUBLE_EQ(r.ratio, (208.0 + 32.0) / 192.0);
  // Amortised over 4 requests, each carries a quarter of the table.
  EXPECT_DOUBLE_EQ(r.ratio_shared_by(4), (208.0 + 8.0) / 192.0);
  // Reconstruction is exact for on-codeword vectors.
  detail::DenseLayer d = detail::reconstruct_layer(cache, 0, 0);
  EXPECT_TRUE(at::allclose(d.values[0], values[0]));
}

// Keeps a fixed set of tokens per query head.
class FixedPolicy : public EvictionPolicy {
 public:
  explicit FixedPolicy(at::Tensor kept) : kept_(std::move(kept)) {}
  std::string name() const override { return "fixed"; }
  at::Tensor select(const EvictionInput&) const override { return kept_; }

 private:
  at::Tensor kept_;
};

// Narrower storage: entries, exact rows and the dense denominator take 2
// bytes an element, magnitudes float16, codes int16 (they fit); positions
// stay 4 bytes.
TEST(CompressedCache, ByteAccountingCountsTheStorageDtypesWidths) {
  ModelConfig c = testutil::tiny_config(2, 1, 4);
  c.num_layers = 1;
  for (StorageDtype dtype : {StorageDtype::kFloat16, StorageDtype::kBFloat16}) {
    CompressionParameters p;
    p.reserve_ratio = 0.5;
    p.window = 2;
    p.codebook = CodebookMode::kJustInTime;
    p.key_threshold = p.value_threshold = 0.99;
    p.storage_dtype = dtype;
    CompressedCache cache(c.geometry(), 1, p);
    cache.set_policy(std::make_shared<FixedPolicy>(
        at::tensor({1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1}).to(at::kBool).view({2, 6})));
    // Keys: all along e0 (one entry); values: along e1 and e2 (two entries).
    at::Tensor keys = at::zeros({1, 6, 4}), values = at::zeros({1, 6, 4});
    for (int i = 0; i < 6; ++i) keys[0][i][0] = i + 1.0, values[0][i][1 + i % 2] = 2.0;
    cache.prefill(0, 0, keys, values, at::zeros({2, 2, 6}));
    const LayerMemory m = cache.memory().layers[0];
    EXPECT_EQ(m.slots, 4);               // tokens 0, 2, 4 and 5
    EXPECT_EQ(m.code_bytes, 2 * 4 * 2);  // int16: the codes fit
    EXPECT_EQ(m.magnitude_bytes, 2 * 4 * 2);
    EXPECT_EQ(m.position_bytes, 4 * 4);
    EXPECT_EQ(m.jit_entry_bytes, (1 + 2) * 4 * 2);
    EXPECT_EQ(m.exact_bytes, 0);
    EXPECT_EQ(m.full_bytes, 2 * 6 * 1 * 4 * 2);
    EXPECT_EQ(cache.memory().dtype, dtype);
    TempDir dir;
    cache.save(dir.file("c.safetensors"));
    SafetensorsReader r(dir.file("c.safetensors"));
    EXPECT_STREQ(dtype_name(r.info("s0.l0.keys.jit").dtype),
                 dtype == StorageDtype::kFloat16 ? "F16" : "BF16");
    EXPECT_STREQ(dtype_name(r.info("s0.l0.keys.magnitude").dtype), "F16");
    EXPECT_STREQ(dtype_name(r.info("s0.l0.keys.code").dtype), "I16");
    const CompressedCache loaded = CompressedCache::load(dir.file("c.safetensors"), c.geometry());
    EXPECT_EQ(loaded.parameters().storage_dtype, dtype);
    EXPECT_TRUE(at::equal(detail::reconstruct_layer(loaded, 0, 0).keys,
                          detail::reconstruct_layer(cache, 0, 0).keys));
  }
  EXPECT_SKV_ERROR(parse_storage_dtype("fp8"), "allowed: float32, float16, bfloat16");
}

int64_t held_bytes_with(const ModelConfig& c, GqaMode gqa, const at::Tensor& kept,
                        LayerMemory* out = nullptr) {
  CompressionParameters p;
  p.reserve_ratio = 0.5;
  p.window = 2;
  p.gqa = gqa;
  p.codebook = CodebookMode::kNone;
  CompressedCache cache(c.geometry(), 1, p);
  cache.set_policy(std::make_shared<FixedPolicy>(kept));
  at::manual_seed(1);
  const int64_t T = kept.size(1);
  cache.prefill(0, 0, at::randn({c.num_kv_heads, T, c.head_dim}),
                at::randn({c.num_kv_heads, T, c.head_dim}), at::zeros({c.num_heads, 2, T}));
  if (out) *out = cache.memory().layers[0];
  return cache.memory().layers[0].held_bytes();
}

TEST(CompressedCache, GqaUnionStoresEachKeptTokenOnceWithAMembershipMask) {
  ModelConfig c = testutil::tiny_config(4, 2, 8);
  c.num_layers = 1;
  // Heads 0,1 share KV head 0; heads 2,3 share KV head 1. Within a group the
  // heads choose different tokens: the KV head stores the union once, and
  // only a membership mask is added, never a repeated vector.
  at::Tensor differ = at::zeros({4, 10}, at::kBool);
  for (int64_t h = 0; h < 4; ++h) {
    differ[h].narrow(0, 8, 2).fill_(true);
    differ[h][h < 2 ? 1 : 4] = true;
    differ[h][h < 2 ? 3 : 6] = true;
  }
  differ[1][3] = false;
  differ[1][5] = true;
  LayerMemory m;
  held_bytes_with(c, GqaMode::kRepeat, differ, &m);
  EXPECT_EQ(m.slots, 5 + 4);                // KV head 0: {1,3,5,8,9}; KV head 1: {4,6,8,9}
  EXPECT_EQ(m.exact_vectors, 2 * (5 + 4));  // one K and one V per slot
  EXPECT_EQ(m.kept_head_tokens, 4 * 4);     // every query head sees 4 tokens
  EXPECT_EQ(m.membership_bytes, 4 * 5);     // [heads, slots] bool
}

TEST(CompressedCache, GroupMeanAndUnionDifferWhenAGroupsHeadsDisagree) {
  ModelConfig c = testutil::tiny_config(4, 2, 8);
  c.num_layers = 1;
  CompressionParameters p;
  p.reserve_ratio = 0.5;  // 10 tokens: 3 context tokens per head + window 2
  p.window = 2;
  p.budget = BudgetKind::kUniform;
  p.codebook = CodebookMode::kNone;
  // Within each group, head A looks at tokens 0-2 and head B at tokens 3-5.
  at::Tensor att = at::full({4, 2, 10}, 0.001);
  for (int64_t h = 0; h < 4; ++h) {
    for (int64_t t = 0; t < 3; ++t)
      att[h].select(1, (h % 2 == 0 ? 0 : 3) + t).fill_(0.3 - 0.05 * t);
  }
  at::manual_seed(3);
  at::Tensor keys = at::randn({2, 10, 8}), values = at::randn({2, 10, 8});
  LayerMemory union_memory, mean_memory;
  for (GqaMode gqa : {GqaMode::kRepeat, GqaMode::kGroupAverage}) {
    p.gqa = gqa;
    CompressedCache cache(c.geometry(), 1, p);  // the default policy: window attention with p.gqa
    cache.prefill(0, 0, keys, values, att);
    (gqa == GqaMode::kRepeat ? union_memory : mean_memory) = cache.memory().layers[0];
  }
  EXPECT_EQ(union_memory.slots, 2 * (6 + 2));  // both heads' choices, per KV head
  EXPECT_GT(union_memory.membership_bytes, 0);
  EXPECT_EQ(mean_memory.slots, 2 * (3 + 2));  // one choice per KV head
  EXPECT_EQ(mean_memory.membership_bytes, 0);
  EXPECT_EQ(mean_memory.kept_head_tokens, union_memory.kept_head_tokens);  // 5 per head
}

TEST(CompressedCache, PyramidBudgetsShrinkWithDepth) {
  ModelConfig c = testutil::tiny_config(4, 2, 8);
  c.num_layers = 4;
  CompressionParameters p;
  p.reserve_ratio = 0.3;
  p.window = 8;
  p.codebook = CodebookMode::kNone;
  CompressedCache cache(c.geometry(), 1, p);
  std::vector<int64_t> budgets;
  for (int64_t l = 0; l < 4; ++l) budgets.push_back(cache.layer_budget(l, 108));
  // r_c = (0.3*108 - 8) / 100 = 0.244: layer 0 keeps 2 r_c - beta = 0.438, the last 0.05.
  EXPECT_EQ(budgets.front(), 43);
  EXPECT_EQ(budgets.back(), 5);
  EXPECT_GT(budgets[1], budgets[2]);
}

TEST(CompressedCache, DecodedVectorsJoinOrExtendTheJitCodebook) {
  ModelConfig c = testutil::tiny_config(1, 1, 4);
  c.num_layers = 1;
  CompressionParameters p;
  p.storage_dtype = StorageDtype::kFloat32;  // exact comparisons: the default is float16
  p.reserve_ratio = 1.0;
  p.codebook = CodebookMode::kJustInTime;
  p.key_threshold = p.value_threshold = 0.9;
  CompressedCache cache(c.geometry(), 1, p);
  at::Tensor e0 = at::tensor({1.0f, 0.0f, 0.0f, 0.0f}), e1 = at::tensor({0.0f, 1.0f, 0.0f, 0.0f});
  cache.prefill(0, 0, e0.repeat({1, 4, 1}) * 2, e0.repeat({1, 4, 1}), at::Tensor());
  EXPECT_EQ(cache.memory().layers[0].jit_entry_bytes, 2 * 16);  // one key and one value entry
  at::Tensor q = at::randn({1, 1, 1, 4});
  auto append = [&](const at::Tensor& k, int64_t pos) {
    cache.append_and_attend(0, q, k.view({1, 1, 1, 4}), e0.view({1, 1, 1, 4}),
                            at::tensor({pos}, at::kLong).view({1, 1}));
    cache.advance(1);
  };
  append(e0 * 5, 4);
  EXPECT_EQ(cache.memory().layers[0].jit_entry_bytes, 2 * 16);  // joined
  append(e1 * 3, 5);
  EXPECT_EQ(cache.memory().layers[0].jit_entry_bytes, 3 * 16);  // a new key entry
  EXPECT_EQ(cache.memory().layers[0].jit_vectors, 12);
  EXPECT_EQ(cache.next_position(0), 6);
}

TEST(CompressedCache, SavedCacheLoadsBackAndDecodesTheSame) {
  ModelConfig c = testutil::tiny_config(4, 2, 8);
  const LlamaModel model = clustered_model(c);
  CompressionParameters p;
  p.reserve_ratio = 0.5;
  p.window = 4;
  p.codebook = CodebookMode::kHybrid;
  p.key_threshold = p.value_threshold = 0.8;
  auto artifact = random_artifact(c, 3);
  TempDir dir;
  save_artifact(dir.file("a.safetensors"), *artifact);
  CompressedCache cache(c.geometry(), 2, p, artifact);
  std::vector<int64_t> prompt;
  for (int64_t i = 0; i < 40; ++i) prompt.push_back((i * 3) % 37);
  prefill_compressed(model, prompt, cache, 0);
  at::Tensor last = prefill_compressed(model, {prompt.begin(), prompt.begin() + 25}, cache, 1);
  cache.save(dir.file("cache.safetensors"));
  CompressedCache loaded =
      CompressedCache::load(dir.file("cache.safetensors"), c.geometry(), artifact);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t l = 0; l < c.num_layers; ++l) {
      auto x = detail::reconstruct_layer(cache, b, l), y = detail::reconstruct_layer(loaded, b, l);
      EXPECT_TRUE(at::equal(x.keys, y.keys) && at::equal(x.values, y.values) &&
                  at::equal(x.visible, y.visible));
    }
  }
  EXPECT_EQ(loaded.memory().held_bytes, cache.memory().held_bytes);
  at::Tensor next = at::tensor({1, 2}, at::kLong).view({2, 1});
  EXPECT_TRUE(
      at::equal(model.forward_with_cache(next, cache), model.forward_with_cache(next, loaded)));
  EXPECT_SKV_ERROR(CompressedCache::load(dir.file("cache.safetensors"), c.geometry(), nullptr),
                   "artifact checksum");
  ModelConfig other = c;
  other.head_dim = 4;
  other.hidden_size = 16;
  EXPECT_SKV_ERROR(CompressedCache::load(dir.file("cache.safetensors"), other.geometry(), nullptr),
                   "artifact");
}

// Found by compressed_cache_fuzz: a saved token at a position past the
// sequence's next position made decoding read past the end of the RoPE table.
TEST(CompressedCache, SavedPositionsPastTheNextPositionAreRefused) {
  ModelConfig c = testutil::tiny_config(4, 2, 8);
  CompressionParameters p;
  p.reserve_ratio = 0.5;
  p.window = 4;
  p.codebook = CodebookMode::kNone;
  CompressedCache cache(c.geometry(), 1, p);
  at::manual_seed(4);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    cache.prefill(0, l, at::randn({2, 20, 8}), at::randn({2, 20, 8}),
                  at::softmax(at::randn({4, 4, 20}), -1));
  }
  TempDir dir;
  cache.save(dir.file("c.safetensors"));
  SafetensorsReader r(dir.file("c.safetensors"));
  for (int bad : {20, 70000, -2}) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& t : r.tensor_names()) {
      at::Tensor x = r.tensor(t);
      if (t == "s0.l1.positions") x[1][0] = bad;
      tensors.emplace_back(t, x);
    }
    write_safetensors(dir.file("bad.safetensors"), tensors, r.metadata());
    EXPECT_SKV_ERROR(CompressedCache::load(dir.file("bad.safetensors"), c.geometry()),
                     "tensor 's0.l1.positions' holds [");
  }
  EXPECT_NO_THROW(CompressedCache::load(dir.file("c.safetensors"), c.geometry()));
  // The fuzzer's own input (its geometry: 2 layers, 4 heads, 2 KV heads of 32).
  CacheGeometry g;
  g.num_layers = 2;
  g.num_heads = 4;
  g.num_kv_heads = 2;
  g.head_dim = 32;
  EXPECT_SKV_ERROR(CompressedCache::load(std::string(SPINDLEKV_SOURCE_DIR) +
                                             "/tests/fuzz_regressions/"
                                             "compressed_cache_positions_past_next.safetensors",
                                         g),
                   "positions' holds [");
}

TEST(CompressedCache, BadInputIsRefusedWithTheShapeNamed) {
  ModelConfig c = testutil::tiny_config(4, 2, 8);
  CompressionParameters p;
  p.codebook = CodebookMode::kCalibrated;
  EXPECT_SKV_ERROR(CompressedCache(c.geometry(), 1, p), "needs an artifact");
  p.codebook = CodebookMode::kNone;
  p.reserve_ratio = 0;
  EXPECT_SKV_ERROR(CompressedCache(c.geometry(), 1, p), "reserve_ratio");
  p.reserve_ratio = 0.5;
  p.window = 2;
  CompressedCache cache(c.geometry(), 1, p);
  EXPECT_SKV_ERROR(cache.prefill(0, 0, at::zeros({3, 10, 8}), at::zeros({3, 10, 8}), at::Tensor()),
                   "keys must be [2, tokens, 8]");
  EXPECT_SKV_ERROR(cache.prefill(0, 0, at::zeros({2, 10, 8}), at::zeros({2, 10, 8}), at::Tensor()),
                   "attention must be");
  cache.prefill(0, 0, at::randn({2, 10, 8}), at::randn({2, 10, 8}), at::ones({4, 2, 10}));
  EXPECT_SKV_ERROR(
      cache.prefill(0, 0, at::randn({2, 10, 8}), at::randn({2, 10, 8}), at::ones({4, 2, 10})),
      "already holds tokens");
  EXPECT_SKV_ERROR(
      cache.prefill(0, 1, at::randn({2, 12, 8}), at::randn({2, 12, 8}), at::ones({4, 2, 12})),
      "prefilled with 10 tokens");
  EXPECT_SKV_ERROR(cache.prefill(1, 0, at::randn({2, 10, 8}), at::randn({2, 10, 8}), at::Tensor()),
                   "sequence 1 outside [0, 1)");
  EXPECT_SKV_ERROR(parse_codebook_mode("cold"), "allowed: none, calibrated, jit, hybrid");
}

}  // namespace
}  // namespace spindlekv

namespace spindlekv {
namespace {

std::vector<int64_t> token_prompt(int64_t n, int64_t vocab) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back((i * 7 + 3) % vocab);
  return ids;
}

TEST(CompressedCache, TokenIdLayerReproducesLayerZeroExactly) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  const LlamaModel model = clustered_model(c);
  const std::vector<int64_t> prompt = token_prompt(30, c.vocab_size);
  const PrefillCapture p = capture_prefill(model, prompt, 4);
  const auto [keys_by_token, values_by_token] = model.token_kv_table(0);
  ASSERT_EQ(keys_by_token.sizes(), (std::vector<int64_t>{c.vocab_size, 2, 8}));
  // The table's rows are the forward pass's layer-0 K/V up to float32
  // rounding (the GEMM differs only in its batch size: vocab rows, not 30).
  at::Tensor ids = at::tensor(prompt, at::kLong);
  const at::Tensor k_rows = keys_by_token.index_select(0, ids).transpose(0, 1);
  const at::Tensor v_rows = values_by_token.index_select(0, ids).transpose(0, 1);
  const at::Tensor& k_fwd = p.capture.out[0].keys_pre_rope[0];
  const at::Tensor& v_fwd = p.capture.out[0].values[0];
  std::printf("largest difference: keys %.3g, values %.3g (largest entry %.3g)\n",
              (k_rows - k_fwd).abs().max().item<double>(),
              (v_rows - v_fwd).abs().max().item<double>(), k_fwd.abs().max().item<double>());
  EXPECT_TRUE(at::allclose(k_rows, k_fwd, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(v_rows, v_fwd, 1e-6, 1e-6));

  CompressionParameters params;
  params.storage_dtype = StorageDtype::kFloat32;  // exact comparisons: the default is float16
  params.reserve_ratio = 1.0;
  params.codebook = CodebookMode::kNone;
  CompressedCache full(c.geometry(), 1, params), ids_cache(c.geometry(), 1, params);
  ids_cache.hold_as_token_ids(0, keys_by_token, values_by_token);
  compress_prefill(p, full, 0);
  compress_prefill(p, ids_cache, 0);
  // The cache rebuilds layer 0 from the table's rows, bitwise.
  const detail::DenseLayer a = detail::reconstruct_layer(full, 0, 0),
                           b = detail::reconstruct_layer(ids_cache, 0, 0);
  EXPECT_TRUE(at::equal(b.values, v_rows));
  EXPECT_TRUE(at::allclose(a.values, b.values, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(a.keys, b.keys, 1e-6, 1e-6));
  // Decoding through both caches gives the same logits (new tokens as ids too).
  at::Tensor next = p.last_logits.argmax().view({1, 1});
  for (int step = 0; step < 4; ++step) {
    at::Tensor la = model.forward_with_cache(next, full).view({-1});
    at::Tensor lb = model.forward_with_cache(next, ids_cache).view({-1});
    EXPECT_TRUE(at::allclose(la, lb, 1e-5, 1e-5)) << "step " << step;
    next = la.argmax().view({1, 1});
  }
  // Bytes: the ids as stored, an int32 code and a float32 magnitude per KV
  // head for K and for V (float32 storage), no vectors; the whole table is
  // charged as shared (K and V, both KV heads).
  const MemoryReport m = ids_cache.memory();
  const int64_t tokens = 30 + 4;
  EXPECT_EQ(m.layers[0].token_id_bytes, tokens * c.num_kv_heads * 2 * (4 + 4));
  EXPECT_EQ(m.layers[0].held_bytes(), m.layers[0].token_id_bytes);
  const int64_t distinct = std::get<0>(at::_unique(ids)).numel();  // the prompt's ids
  EXPECT_GE(m.layers[0].shared_entry_bytes, distinct * 2 * 8 * 4 * 2);
  EXPECT_EQ(m.shared_bytes_total, c.vocab_size * 2 * 8 * 4 * 2);
  EXPECT_EQ(m.layers[1].token_id_bytes, 0);
  EXPECT_LT(m.held_bytes, full.memory().held_bytes);
  EXPECT_SKV_ERROR(ids_cache.save(testutil::TempDir().file("c.safetensors")), "token ids");
}

TEST(CompressedCache, TokenIdLayerIsRefusedWhereKvDependOnContext) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  const LlamaModel model = clustered_model(c);
  EXPECT_SKV_ERROR(model.token_kv_table(1), "depend on the tokens before it");
  const PrefillCapture p = capture_prefill(model, token_prompt(20, c.vocab_size), 4);
  const auto [keys_by_token, values_by_token] = model.token_kv_table(0);
  CompressionParameters params;
  params.reserve_ratio = 1.0;
  params.codebook = CodebookMode::kNone;
  CompressedCache cache(c.geometry(), 1, params);
  cache.hold_as_token_ids(1, keys_by_token, values_by_token);  // layer 1 is not token-determined
  EXPECT_SKV_ERROR(compress_prefill(p, cache, 0), "layer 1 cannot be held as token ids");
  CompressedCache no_ids(c.geometry(), 1, params);
  no_ids.hold_as_token_ids(0, keys_by_token, values_by_token);
  EXPECT_SKV_ERROR(no_ids.prefill(0, 0, p.capture.out[0].keys_pre_rope[0],
                                  p.capture.out[0].values[0], at::Tensor()),
                   "needs the prompt's token ids");
  EXPECT_SKV_ERROR(no_ids.hold_as_token_ids(0, keys_by_token.narrow(1, 0, 1), values_by_token),
                   "keys_by_token must be");
}

}  // namespace
}  // namespace spindlekv
