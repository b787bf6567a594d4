// The fused decode kernels' own source (runtime/detail/decode_kernels.cuh)
// on the CPU under an emulation of CUDA (simt.h, emulated_decode_kernel.h),
// against the ATen path: CI, which has no GPU, checks their arithmetic,
// indexing and the state they leave. Races and memory ordering need a GPU
// (fused_decode_test.cpp, scripts/gpu_check.sh).
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "emulated_decode_kernel.h"
#include "fused_decode_cases.h"
#include "runtime/detail/cache_access.h"
#include "runtime/detail/compressed_cache_impl.h"
#include "runtime/detail/decode_attention.h"

namespace spindlekv {
namespace {

using namespace testutil;  // NOLINT: the shared cases and checks

// The kernels' own source on the CPU (emulated_decode_kernel.h), sized for 8
// multiprocessors so that longer sequences split over several blocks.
class FusedDecodeEmulated : public ::testing::Test {
 protected:
  void SetUp() override {
    detail::set_cpu_decode_launcher(testutil::emulated_decode_launch, 8,
                                    testutil::emulated_append_launch);
  }
  void TearDown() override { detail::set_cpu_decode_launcher(nullptr); }

  // The fused and the ATen decode of `c` on the CPU agree, and the fused
  // one made `launches` attention launches per layer and step (and the
  // append's).
  void expect_kernel_matches(const Case& c, const std::vector<int64_t>& lengths, int64_t steps,
                             int64_t launches) {
    const int64_t before = testutil::emulated_decode_launches();
    const int64_t appends_before = testutil::emulated_append_launches();
    KernelCalls calls;
    const auto fused = decode(c, true, lengths, steps, c10::kCPU);
    EXPECT_EQ(testutil::emulated_decode_launches() - before, launches * steps * 2)  // 2 layers
        << c.name << ": the fused attention did not serve every step";
    EXPECT_EQ(calls.attention(), launches * steps * 2) << c.name;
    EXPECT_EQ(calls.append(), append_launches(lengths.size()) * steps * 2) << c.name;
    EXPECT_EQ(testutil::emulated_append_launches() - appends_before,
              append_launches(lengths.size()) * steps * 2)
        << c.name << ": the fused append did not serve every step it applies to";
    expect_same(fused, decode(c, false, lengths, steps, c10::kCPU), c.name);
  }
};

TEST_F(FusedDecodeEmulated, KernelSourceMatchesTheAtenPathInEveryModeDtypeAndHeadSize) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    expect_kernel_matches(c, {40, 57, 23}, 2, 1);
  }
}

TEST_F(FusedDecodeEmulated, ServesACacheWhoseDeviceNamesAnIndex) {
  // A cache made for "cuda:0" holds tables whose device says "cuda:0" or
  // "cuda": both kernels apply whichever way the device was named.
  Case c{"calibrated/float32/d32", 4, 1, 32,
         params(CodebookMode::kCalibrated, 0.4, StorageDtype::kFloat32)};
  KernelCalls calls;
  const auto indexed = decode(c, true, {20, 13}, 2, c10::Device(c10::kCPU, 0));
  EXPECT_EQ(calls.attention(), 2 * 2);
  EXPECT_EQ(calls.append(), 2 * 2);
  expect_same(indexed, decode(c, false, {20, 13}, 2, c10::kCPU), c.name);
}

TEST_F(FusedDecodeEmulated, AppendWidensCodesAndCodesZeroVectorsAsTheAtenAppend) {
  // A table of 40000 entries: its codes do not fit int16, so the first
  // append widens the codes (held as int16 for float16 storage) to int32.
  // Per step: a zero key (the zero code), a key on entry 35000 (a hit), and
  // random values (misses: exact rows).
  const int64_t kv = 2, d = 32, heads = 4, K = 40000;
  at::manual_seed(3);
  detail::CodebookTables keys_table, values_table;
  keys_table.calibrated = at::randn({1, K, d});
  keys_table.calibrated =  // in the entry dtype, as the cache holds it
      (keys_table.calibrated / keys_table.calibrated.norm(2, -1, true)).to(at::kHalf);
  keys_table.calibrated_sizes = {K};
  keys_table.threshold = 0.5;
  values_table = keys_table;
  values_table.calibrated_sizes = {K / 2};  // entries past it are not in use
  values_table.threshold = 0.95;            // random values miss
  detail::SequenceLayer fused, aten;
  for (detail::SequenceLayer* S : {&fused, &aten}) {
    S->filled = true;
    S->positions = at::empty({kv, 0}, at::kInt);
    S->keys = detail::empty_coded(kv, d, at::TensorOptions(), StorageDtype::kFloat16);
    S->values = detail::empty_coded(kv, d, at::TensorOptions(), StorageDtype::kFloat16);
  }
  ASSERT_EQ(fused.keys.code.scalar_type(), at::kShort);
  for (int64_t step = 0; step < 3; ++step) {
    at::Tensor k = at::zeros({1, kv, 1, d});
    k[0][1][0] = 3.0 * keys_table.calibrated[0][35000].to(at::kFloat);
    at::Tensor v = at::randn({1, kv, 1, d});
    v[0][0][0] = 0.5 * values_table.calibrated[0][30000].to(at::kFloat);  // past the count
    detail::fused_append({&fused}, keys_table, values_table, CodebookMode::kCalibrated, false, k, v,
                         at::full({1, 1}, 7 + step, at::kLong), heads);
    detail::append_coded(aten.keys, k[0], at::Tensor(), keys_table, CodebookMode::kCalibrated,
                         false, /*defer_counts=*/true);
    detail::append_coded(aten.values, v[0], at::Tensor(), values_table, CodebookMode::kCalibrated,
                         false, /*defer_counts=*/true);
    aten.positions = detail::append_columns(aten.positions_buffer, aten.positions,
                                            at::full({kv, 1}, 7 + step, at::kInt));
  }
  EXPECT_EQ(fused.keys.code.scalar_type(), at::kInt);
  const at::Tensor codes = detail::codes_long(fused.keys);
  EXPECT_EQ(codes[0][0].item<int64_t>(), detail::kZeroCode);
  EXPECT_EQ(codes[1][0].item<int64_t>(), 35000);
  EXPECT_TRUE(at::equal(fused.positions, aten.positions));
  expect_same_side(fused.keys, aten.keys, "keys");
  expect_same_side(fused.values, aten.values, "values");
  EXPECT_EQ(detail::exact_rows_in_use(fused.values), (std::vector<int64_t>{3, 3}));
  // A table in another dtype than the rows is refused, not misread.
  keys_table.calibrated = keys_table.calibrated.to(at::kFloat);
  EXPECT_THROW(detail::fused_append({&fused}, keys_table, values_table, CodebookMode::kCalibrated,
                                    false, at::randn({1, kv, 1, d}), at::randn({1, kv, 1, d}),
                                    at::full({1, 1}, 10, at::kLong), heads),
               Error);
}

TEST_F(FusedDecodeEmulated, KernelSourceSplitOverSeveralBlocksMatchesTheAtenPath) {
  // 8 multiprocessors, 2 sequences x 2 KV heads: 8 splits wanted, about
  // 350 and 150 slots held, so several splits per sequence, some empty.
  Case c{"calibrated/float16/d64", 8, 2, 64,
         params(CodebookMode::kCalibrated, 0.5, StorageDtype::kFloat16)};
  expect_kernel_matches(c, {700, 300}, 2, 1);
}

TEST_F(FusedDecodeEmulated, KernelSourceOverMoreSequencesThanOneLaunchMatchesTheAtenPath) {
  Case c{"eviction/bfloat16/d32", 4, 2, 32,
         params(CodebookMode::kNone, 0.4, StorageDtype::kBFloat16)};
  std::vector<int64_t> lengths;
  for (int64_t b = 0; b < 19; ++b) lengths.push_back(16 + 3 * b);
  expect_kernel_matches(c, lengths, 2, 2);
}

TEST_F(FusedDecodeEmulated, AppendKernelStoresWhatTheAtenAppendStores) {
  // The append alone fused (the emulated attention is the slow part), for
  // 66 steps: past the 64 deferred appends after which the exact-row and
  // just-in-time entry counts are read back; every codebook mode, the
  // just-in-time ones extending their entries with each miss or not.
  detail::set_cpu_decode_launcher(nullptr, 8, testutil::emulated_append_launch);
  struct Variant {
    CodebookMode mode;
    StorageDtype dtype;
    bool extend;
  };
  const Variant variants[] = {{CodebookMode::kNone, StorageDtype::kFloat32, true},
                              {CodebookMode::kCalibrated, StorageDtype::kFloat16, true},
                              {CodebookMode::kCalibrated, StorageDtype::kBFloat16, true},
                              {CodebookMode::kJustInTime, StorageDtype::kFloat16, true},
                              {CodebookMode::kHybrid, StorageDtype::kBFloat16, true},
                              {CodebookMode::kJustInTime, StorageDtype::kFloat32, false}};
  for (const Variant& variant : variants) {
    const CodebookMode mode = variant.mode;
    const StorageDtype dtype = variant.dtype;
    {
      Case c{"append", 2, 1, 32, params(mode, 0.4, dtype)};  // one KV head: half the blocks
      c.params.extend_codebook_when_decoding = variant.extend;
      const std::string name = std::string(to_string(mode)) + "/" +
                               std::to_string(static_cast<int>(dtype)) +
                               (variant.extend ? "/extending" : "");
      SCOPED_TRACE(name);
      const std::vector<int64_t> lengths = {30, 12, 21};
      std::unique_ptr<CompressedCache> fused, aten;
      const int64_t appends = testutil::emulated_append_launches();
      const int64_t decodes = testutil::emulated_decode_launches();
      decode(c, true, lengths, 66, c10::kCPU, &fused);
      decode(c, false, lengths, 66, c10::kCPU, &aten);
      EXPECT_EQ(testutil::emulated_append_launches() - appends, 66 * 2);
      EXPECT_EQ(testutil::emulated_decode_launches(), decodes);  // the attention in ATen
      const auto& F = detail::CacheAccess::impl(*fused);
      const auto& A = detail::CacheAccess::impl(*aten);
      for (size_t b = 0; b < lengths.size(); ++b) {
        for (int64_t l = 0; l < 2; ++l) {
          const std::string what =
              name + ", sequence " + std::to_string(b) + ", layer " + std::to_string(l);
          const auto& f = F.sequences[b][l];
          const auto& a = A.sequences[b][l];
          EXPECT_TRUE(at::equal(f.positions, a.positions)) << what << ": positions";
          EXPECT_EQ(f.member.defined(), a.member.defined()) << what;
          if (f.member.defined()) EXPECT_TRUE(at::equal(f.member, a.member)) << what;
          EXPECT_EQ(f.tokens_seen, a.tokens_seen) << what;
          expect_same_side(f.keys, a.keys, what + ", keys");
          expect_same_side(f.values, a.values, what + ", values");
        }
      }
      // What the caches count (deferred counts read back) agrees too.
      const MemoryReport fm = fused->memory(), am = aten->memory();
      EXPECT_EQ(fm.held_bytes, am.held_bytes);
      for (size_t l = 0; l < fm.layers.size(); ++l) {
        EXPECT_EQ(fm.layers[l].jit_entry_bytes, am.layers[l].jit_entry_bytes) << l;
        EXPECT_EQ(fm.layers[l].exact_bytes, am.layers[l].exact_bytes) << l;
        EXPECT_EQ(fm.layers[l].distinct_entries, am.layers[l].distinct_entries) << l;
      }
    }
  }
}

// Calls that do work (not views, allocations or conversions to the same
// dtype) made directly inside the profiler scope "spindlekv::decode_append":
// about one launch each on a GPU.
class AppendWork {
 public:
  AppendWork() : handle_(at::addThreadLocalCallback(at::RecordFunctionCallback(&enter, &leave))) {
    state() = State();
  }
  ~AppendWork() { at::removeCallback(handle_); }
  int64_t calls() const { return state().calls; }

 private:
  struct State {
    int scope = 0, depth = 0;
    bool work = false;
    int64_t calls = 0;
  };
  struct Marker : at::ObserverContext {
    explicit Marker(bool s) : scope(s) {}
    bool scope;
  };
  static State& state() {
    static State s;
    return s;
  }
  static std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
    State& s = state();
    if (std::strcmp(fn.name(), "spindlekv::decode_append") == 0) {
      ++s.scope;
      return std::make_unique<Marker>(true);
    }
    if (s.scope == 0) return nullptr;
    static const std::set<std::string> kViews = {
        "aten::view",    "aten::narrow",         "aten::slice",      "aten::select",
        "aten::expand",  "aten::unsqueeze",      "aten::squeeze",    "aten::transpose",
        "aten::t",       "aten::as_strided",     "aten::alias",      "aten::detach",
        "aten::reshape", "aten::_reshape_alias", "aten::empty",      "aten::empty_strided",
        "aten::to",      "aten::contiguous",     "aten::lift_fresh", "aten::resize_"};
    if (s.depth++ == 0) s.work = false;
    if (!kViews.count(fn.name())) s.work = true;
    return std::make_unique<Marker>(false);
  }
  static void leave(const at::RecordFunction&, at::ObserverContext* context) {
    if (context == nullptr) return;
    State& s = state();
    if (static_cast<Marker*>(context)->scope) {
      --s.scope;
      return;
    }
    if (--s.depth == 0 && s.work) ++s.calls;
  }
  at::CallbackHandle handle_;
};

// The fewest calls that did work in the append of one decode step of layer
// 0, over `steps` steps (some steps also grow a buffer).
int64_t fewest_append_calls(int64_t batch, int64_t steps) {
  Case c{"calibrated/bfloat16/d64", 8, 2, 64,
         params(CodebookMode::kCalibrated, 0.4, StorageDtype::kBFloat16)};
  ModelConfig config = testutil::tiny_config(c.heads, c.kv_heads, c.head_dim);
  const CacheGeometry g = config.geometry();
  CompressedCache cache(g, batch, c.params, testutil::random_artifact(config, 7));
  at::manual_seed(5);
  for (int64_t b = 0; b < batch; ++b) {
    cache.prefill(b, 0, at::randn({2, 20 + b, 64}), at::randn({2, 20 + b, 64}),
                  at::softmax(at::randn({8, 4, 20 + b}), -1));
  }
  int64_t fewest = -1;
  for (int64_t s = 0; s < steps; ++s) {
    at::Tensor positions = at::empty({batch, 1}, at::kLong);
    for (int64_t b = 0; b < batch; ++b) positions[b][0] = 20 + b + s;
    const at::Tensor q = at::randn({batch, 8, 1, 64}), k = at::randn({batch, 2, 1, 64}),
                     v = at::randn({batch, 2, 1, 64});
    AppendWork work;
    cache.append_and_attend(0, q, k, v, positions);
    fewest = fewest < 0 ? work.calls() : std::min(fewest, work.calls());
    cache.advance(1);
  }
  return fewest;
}

TEST_F(FusedDecodeEmulated, AtenStepsBetweenFusedOnesLeaveTheSameCache) {
  // Two-token steps take the ATen append (which builds entries from the
  // host's counts) between one-token steps the fused append serves.
  detail::set_cpu_decode_launcher(nullptr, 8, testutil::emulated_append_launch);
  for (CodebookMode mode : {CodebookMode::kJustInTime, CodebookMode::kCalibrated}) {
    SCOPED_TRACE(to_string(mode));
    const ModelConfig config = testutil::tiny_config(2, 1, 32);
    const CacheGeometry g = config.geometry();
    const auto artifact = testutil::random_artifact(config, 7);
    CompressionParameters p = params(mode, 0.4, StorageDtype::kFloat16);
    std::unique_ptr<CompressedCache> caches[2];
    for (int fused = 0; fused < 2; ++fused) {
      p.fused_decode = fused == 1;
      caches[fused] = std::make_unique<CompressedCache>(g, 2, p, artifact);
      CompressedCache& cache = *caches[fused];
      at::manual_seed(13);
      for (int64_t b = 0; b < 2; ++b) {
        for (int64_t l = 0; l < g.num_layers; ++l) {
          cache.prefill(b, l, at::randn({1, 10 + b, 32}), at::randn({1, 10 + b, 32}),
                        at::softmax(at::randn({2, p.window, 10 + b}), -1));
        }
      }
      int64_t position = 11;
      for (int64_t t : {1, 1, 2, 1, 1, 2, 1}) {
        at::Tensor positions = at::empty({2, t}, at::kLong);
        for (int64_t i = 0; i < t; ++i) positions.select(1, i).fill_(position + i);
        for (int64_t l = 0; l < g.num_layers; ++l) {
          cache.append_and_attend(l, at::randn({2, 2, t, 32}), at::randn({2, 1, t, 32}),
                                  at::randn({2, 1, t, 32}), positions);
        }
        cache.advance(t);
        position += t;
      }
    }
    const auto& F = detail::CacheAccess::impl(*caches[1]);
    const auto& A = detail::CacheAccess::impl(*caches[0]);
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t l = 0; l < g.num_layers; ++l) {
        const std::string what = "sequence " + std::to_string(b) + ", layer " + std::to_string(l);
        EXPECT_TRUE(at::equal(F.sequences[b][l].positions, A.sequences[b][l].positions)) << what;
        expect_same_side(F.sequences[b][l].keys, A.sequences[b][l].keys, what + ", keys");
        expect_same_side(F.sequences[b][l].values, A.sequences[b][l].values, what + ", values");
      }
    }
  }
}

TEST_F(FusedDecodeEmulated, AFusedAppendsCallsDoNotGrowWithTheBatch) {
  detail::set_cpu_decode_launcher(nullptr, 8, testutil::emulated_append_launch);
  const int64_t one = fewest_append_calls(1, 6), six = fewest_append_calls(6, 6);
  EXPECT_EQ(six, one);
  EXPECT_LE(one, 6);                         // converting K and V, the positions, the kernel
  detail::set_cpu_decode_launcher(nullptr);  // the ATen append: calls per sequence
  EXPECT_GT(fewest_append_calls(6, 6), fewest_append_calls(1, 6) + 5 * 10);
}

}  // namespace
}  // namespace spindlekv
