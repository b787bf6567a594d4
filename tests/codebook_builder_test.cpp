#include "runtime/codebook_builder.h"
#include "runtime/detail/jit_reference.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

namespace spindlekv {
namespace {

at::Tensor angles_deg(std::vector<double> degrees) {
  at::Tensor out = at::zeros({static_cast<int64_t>(degrees.size()), 2});
  for (size_t i = 0; i < degrees.size(); ++i) {
    out[i][0] = std::cos(degrees[i] * M_PI / 180);
    out[i][1] = std::sin(degrees[i] * M_PI / 180);
  }
  return out;
}

std::vector<int64_t> longs(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

TEST(JitCodebook, GreedyCoverMatchesTheHandComputedCodebook) {
  // cos(15 deg) threshold: 0-10 and 10-20 are linked, 0-20 is not, 90 and
  // 200 are alone. Vertex 1 (10 deg) has the most neighbours and covers 0-2;
  // then 90 and 200 (ties broken by the lower index).
  at::Tensor dirs = angles_deg({0, 10, 20, 90, 200});
  const double threshold = std::cos(15 * M_PI / 180);
  for (auto build : {build_jit_codebook, build_jit_codebook_naive}) {
    JitCodebook cb = build(dirs, threshold);
    ASSERT_EQ(cb.entries.size(0), 3);
    EXPECT_TRUE(at::allclose(cb.entries, angles_deg({10, 90, 200})));
    EXPECT_EQ(longs(cb.index), (std::vector<int64_t>{0, 0, 0, 1, 2}));
  }
}

TEST(JitCodebook, RemovedNeighboursNoLongerCountTowardsDegrees) {
  // A chain 0-8-16-24-32 deg at threshold cos(10): 8 and 16 and 24 have two
  // neighbours; 8 wins (lowest index) taking 0 and 16. Then 24 has one
  // remaining neighbour (32), so 24 is picked and covers 32.
  at::Tensor dirs = angles_deg({0, 8, 16, 24, 32});
  JitCodebook cb = build_jit_codebook(dirs, std::cos(10 * M_PI / 180));
  EXPECT_TRUE(at::allclose(cb.entries, angles_deg({8, 24})));
  EXPECT_EQ(longs(cb.index), (std::vector<int64_t>{0, 0, 0, 1, 1}));
}

TEST(JitCodebook, FastBuilderEqualsNaiveOnClusteredVectors) {
  at::manual_seed(3);
  at::Tensor centres = at::randn({12, 16});
  at::Tensor x = centres.repeat({20, 1}) + 0.15 * at::randn({240, 16});
  at::Tensor dirs = split_magnitude(x).first;
  JitCodebook fast = build_jit_codebook(dirs, 0.95);
  JitCodebook naive = build_jit_codebook_naive(dirs, 0.95);
  EXPECT_TRUE(at::equal(fast.entries, naive.entries));
  EXPECT_TRUE(at::equal(fast.index, naive.index));
  // Every vector lies above the threshold from its entry.
  at::Tensor sims = (dirs * fast.entries.index_select(0, fast.index)).sum(1);
  EXPECT_GT(sims.min().item<double>(), 0.95 - 1e-6);
}

TEST(JitCodebook, FastBuilderEqualsNaiveAcrossSizesAndDensities) {
  // Sizes around the 8-bit byte and 64-bit word boundaries; thresholds from
  // a near-empty graph (every vertex its own entry) to a near-complete one
  // (long runs of equal degrees, stale heap keys after every pick).
  at::manual_seed(11);
  for (int64_t n : {1, 7, 63, 64, 65, 130}) {
    at::Tensor centres = at::randn({3, 8});
    at::Tensor x = centres.repeat({(n + 2) / 3, 1}).narrow(0, 0, n) + 0.6 * at::randn({n, 8});
    at::Tensor dirs = split_magnitude(x).first;
    for (double threshold : {0.99, 0.8, 0.3, -0.5}) {
      JitCodebook fast = build_jit_codebook(dirs, threshold);
      JitCodebook naive = build_jit_codebook_naive(dirs, threshold);
      EXPECT_TRUE(at::equal(fast.entries, naive.entries))
          << "n " << n << " threshold " << threshold;
      EXPECT_TRUE(at::equal(fast.index, naive.index)) << "n " << n << " threshold " << threshold;
    }
  }
}

TEST(JitCodebook, SimilarityBitsAreTheThresholdedProductWithoutSelfLoops) {
  at::manual_seed(5);
  const int64_t n = 77;
  at::Tensor dirs = split_magnitude(at::randn({n, 6})).first;
  const at::Tensor whole = similarity_bits(dirs, 0.2, 0);
  ASSERT_EQ(whole.sizes(), (std::vector<int64_t>{n, 16}));
  // Blocks of 5 rows (the last one short) give the same bits, and so do
  // both ways of packing them.
  EXPECT_TRUE(at::equal(similarity_bits(dirs, 0.2, 5), whole));
  EXPECT_TRUE(at::equal(similarity_bits(dirs, 0.2, 5, BitPacking::kTensorOps), whole));
  EXPECT_TRUE(at::equal(similarity_bits(dirs, 0.2, 0, BitPacking::kTensorOps), whole));
  EXPECT_TRUE(at::equal(similarity_bits(dirs, 0.2, 5, BitPacking::kHostLoop), whole));
  at::Tensor expected = at::mm(dirs, dirs.t()) > 0.2;
  expected.fill_diagonal_(false);
  const uint8_t* b = whole.data_ptr<uint8_t>();
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < 128; ++j) {
      const bool bit = (b[i * 16 + j / 8] >> (j % 8)) & 1;
      const bool want = j < n && expected[i][j].item<bool>();
      wrong += bit != want;
    }
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(similarity_bits(at::zeros({0, 6}), 0.2, 0).numel(), 0);
  // Sets: each one's graph, whichever the packing.
  const at::Tensor sets = at::stack({dirs, dirs.flip(0), split_magnitude(at::randn({n, 6})).first});
  for (BitPacking packing : {BitPacking::kHostLoop, BitPacking::kTensorOps}) {
    const at::Tensor batched = similarity_bits(sets, 0.2, 5, packing);
    ASSERT_EQ(batched.sizes(), (std::vector<int64_t>{3, n, 16}));
    for (int64_t g = 0; g < 3; ++g) {
      EXPECT_TRUE(at::equal(batched[g], similarity_bits(sets[g], 0.2, 0))) << "set " << g;
    }
  }
}

TEST(JitCodebook, SetsBuiltTogetherEqualEachBuiltAlone) {
  // Four sets of different lengths (none, one, and across a 64-bit word),
  // a zero vector in one; the rows past each set's length hold other
  // vectors, which must change nothing. Graphs built set by set, all in one
  // batch, and batched one set at a time.
  at::manual_seed(17);
  const int64_t n = 70, d = 8;
  const std::vector<int64_t> lengths = {70, 0, 1, 65};
  at::Tensor centres = at::randn({4, d});
  at::Tensor x = centres.repeat({n / 4 + 1, 1}).narrow(0, 0, n).unsqueeze(0).repeat({4, 1, 1}) +
                 0.5 * at::randn({4, n, d});
  x[3][10].zero_();
  const at::Tensor dirs = split_magnitude(x).first;
  const std::vector<std::pair<JitGraphs, int64_t>> ways = {
      {JitGraphs::kPerSet, 0}, {JitGraphs::kBatched, int64_t{1} << 28}, {JitGraphs::kBatched, 1}};
  for (const auto& [graphs, max_graph_bytes] : ways) {
    const JitCodebooks all = build_jit_codebooks(dirs, lengths, 0.6, graphs, max_graph_bytes);
    ASSERT_EQ(all.first.size(), 5u);
    ASSERT_EQ(all.index.sizes(), (std::vector<int64_t>{4, n}));
    EXPECT_EQ(all.first[0], 0);
    EXPECT_EQ(all.first[4], all.entries.size(0));
    for (int64_t g = 0; g < 4; ++g) {
      const int64_t len = lengths[g], J = all.first[g + 1] - all.first[g];
      const JitCodebook alone = build_jit_codebook(dirs[g].narrow(0, 0, len).contiguous(), 0.6);
      EXPECT_TRUE(at::equal(all.entries.narrow(0, all.first[g], J), alone.entries)) << "set " << g;
      EXPECT_TRUE(at::equal(all.index[g].narrow(0, 0, len), alone.index)) << "set " << g;
      EXPECT_EQ(longs(all.index[g].narrow(0, len, n - len)), std::vector<int64_t>(n - len, -1))
          << "set " << g;
    }
    EXPECT_EQ(all.index[3][10].item<int64_t>(), -1);  // the zero vector
    EXPECT_EQ(all.first[2] - all.first[1], 0);        // the empty set
  }
}

TEST(JitCodebook, RowsVouchedNonZeroBuildWhatFindingThemBuilds) {
  // A caller that vouches its rows are non-zero (the cache's misses) gets
  // the codebooks the builder makes when it looks for zero rows itself; a
  // zero row vouched for becomes its own entry instead of being skipped.
  at::manual_seed(23);
  const int64_t n = 40, d = 8;
  const std::vector<int64_t> lengths = {40, 3, 0};
  at::Tensor x = at::randn({4, d}).repeat({n / 4, 1}).unsqueeze(0).repeat({3, 1, 1}) +
                 0.4 * at::randn({3, n, d});
  const at::Tensor dirs = split_magnitude(x).first;
  for (JitGraphs graphs : {JitGraphs::kPerSet, JitGraphs::kBatched}) {
    const JitCodebooks found = build_jit_codebooks(dirs, lengths, 0.6, graphs, kJitGraphBytes);
    const JitCodebooks vouched =
        build_jit_codebooks(dirs, lengths, 0.6, graphs, kJitGraphBytes, false);
    EXPECT_EQ(found.first, vouched.first);
    EXPECT_TRUE(at::equal(found.entries, vouched.entries));
    EXPECT_TRUE(at::equal(found.index, vouched.index));
  }
  at::Tensor with_zero = dirs.clone();
  with_zero[1][2].zero_();
  EXPECT_EQ(build_jit_codebooks(with_zero, lengths, 0.6).index[1][2].item<int64_t>(), -1);
  EXPECT_GE(build_jit_codebooks(with_zero, lengths, 0.6, JitGraphs::kAuto, kJitGraphBytes, false)
                .index[1][2]
                .item<int64_t>(),
            0);
}

TEST(JitCodebook, SetsRefuseLengthsThatDoNotFit) {
  const at::Tensor dirs = at::zeros({2, 5, 3});
  EXPECT_SKV_ERROR(build_jit_codebooks(dirs, {5}, 0.5), "one length per set");
  EXPECT_SKV_ERROR(build_jit_codebooks(dirs, {5, 6}, 0.5), "length 6 outside [0, 5]");
  EXPECT_SKV_ERROR(build_jit_codebooks(dirs, {-1, 0}, 0.5), "length -1");
  EXPECT_SKV_ERROR(build_jit_codebooks(dirs[0], {5}, 0.5), "[sets, n, head_dim]");
  EXPECT_SKV_ERROR(build_jit_codebooks(dirs.to(at::kDouble), {5, 5}, 0.5), "float32");
}

TEST(JitCodebook, ZeroVectorsGetNoEntry) {
  at::Tensor x = at::tensor({1.0f, 0.0f, 0.0f, 0.0f, 2.0f, 0.0f}).view({3, 2});
  auto [dirs, mags] = split_magnitude(x);
  EXPECT_EQ(mags[1].item<float>(), 0.0f);
  EXPECT_TRUE(at::equal(dirs[1], at::zeros({2})));
  JitCodebook cb = build_jit_codebook(dirs, 0.9);
  EXPECT_EQ(longs(cb.index), (std::vector<int64_t>{0, -1, 0}));
  EXPECT_EQ(cb.entries.size(0), 1);
}

TEST(CodebookAssignment, PicksTheNearestEntryAboveTheThreshold) {
  at::Tensor codebook = angles_deg({0, 40, 80});
  at::Tensor dirs = angles_deg({35, 5, 78, 60, 130});
  CodebookAssignment a = assign_to_codebook(dirs, codebook, std::cos(12 * M_PI / 180));
  // 60 deg is 20 from both 40 and 80: nearest is 40 but below threshold.
  EXPECT_EQ(longs(a.index), (std::vector<int64_t>{1, 0, 2, -1, -1}));
  EXPECT_NEAR(a.similarity[0].item<double>(), std::cos(5 * M_PI / 180), 1e-6);
  CodebookAssignment none = assign_to_codebook(dirs, at::zeros({0, 2}), 0.5);
  EXPECT_EQ(longs(none.index), (std::vector<int64_t>(5, -1)));
}

TEST(CodebookAssignment, RejectsWrongShapes) {
  EXPECT_SKV_ERROR(assign_to_codebook(at::zeros({3}), at::zeros({2, 2}), 0.5), "directions");
  EXPECT_SKV_ERROR(assign_to_codebook(at::zeros({3, 2}), at::zeros({2, 3}), 0.5), "head_dim");
}

}  // namespace
}  // namespace spindlekv
