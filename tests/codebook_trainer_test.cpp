#include "train/codebook_trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "test_util.h"

namespace spindlekv {
namespace {

// `per` vectors around each of `centres` unit directions, each at cosine >
// `min_cos` from its centre, with random lengths.
at::Tensor planted(const at::Tensor& centres, int64_t per, double noise, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const int64_t k = centres.size(0), d = centres.size(1);
  at::Tensor base = centres.repeat_interleave(per, 0);
  at::Tensor eps = at::normal(0.0, noise, {k * per, d}, gen);
  at::Tensor lengths = at::rand({k * per, 1}, gen) * 3 + 0.5;
  return unit_directions(base + eps) * lengths;
}

at::Tensor random_directions(int64_t k, int64_t d, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return unit_directions(at::normal(0.0, 1.0, {k, d}, gen));
}

TEST(CodebookTrainer, PlantedDirectionsAreRecoveredWithAsManyCodewords) {
  const at::Tensor centres = random_directions(16, 32, 1);
  // noise 0.01 per coordinate in 32-D keeps vectors within cos ~0.998 of the centre.
  at::Tensor train = planted(centres, 200, 0.01, 2), test = planted(centres, 50, 0.01, 3);
  CodebookTrainingParameters p;
  p.threshold = 0.98;
  p.max_codewords = 16;
  Codebook cb = train_codebook(train, p);
  EXPECT_EQ(cb.codewords.size(0), 16);
  EXPECT_GE(cb.coverage, 0.99);
  EXPECT_GE(codebook_coverage(cb.codewords, test, 0.98), 0.99);
  // Every planted centre has a codeword pointing its way.
  at::Tensor sims = at::matmul(centres, cb.codewords.t()).amax(1);
  EXPECT_TRUE((sims > 0.99).all().item<bool>()) << sims;
  EXPECT_TRUE(at::allclose(cb.codewords.norm(2, 1), at::ones({16}), 1e-4, 1e-5));
}

TEST(CodebookTrainer, ExactDuplicatesCollapseOntoOneCodeword) {
  // GQA-repeated vectors: the same 5 directions repeated 40 times each.
  const at::Tensor centres = random_directions(5, 16, 4);
  at::Tensor v = centres.repeat({40, 1}) * 2.0;
  CodebookTrainingParameters p;
  p.max_codewords = 64;
  Codebook cb = train_codebook(v, p);
  EXPECT_EQ(cb.codewords.size(0), 5);
  EXPECT_DOUBLE_EQ(cb.coverage, 1.0);
  EXPECT_EQ(cb.support.sum().item<int64_t>(), 200);
  EXPECT_EQ(cb.support[0].item<int64_t>(), 40);
}

TEST(CodebookTrainer, NearDuplicateCodewordsAreMerged) {
  // Two tight clusters 0.999 apart: with merge_threshold 0.995 they must end
  // as one codeword even though k-means proposes many.
  at::Tensor a = random_directions(1, 16, 5);
  at::Tensor b = unit_directions(a + 0.045 * random_directions(1, 16, 6));
  ASSERT_GT(at::dot(a[0], b[0]).item<float>(), 0.995);
  at::Tensor v = at::cat({planted(a, 100, 0.001, 7), planted(b, 100, 0.001, 8)}, 0);
  CodebookTrainingParameters p;
  p.max_codewords = 8;
  p.threshold = 0.99;
  Codebook cb = train_codebook(v, p);
  EXPECT_EQ(cb.codewords.size(0), 1);
  EXPECT_DOUBLE_EQ(cb.coverage, 1.0);
}

TEST(CodebookTrainer, ZeroVectorsAreNeverCoveredAndDoNotBreakTraining) {
  const at::Tensor centres = random_directions(3, 8, 9);
  at::Tensor v = at::cat({planted(centres, 30, 0.001, 10), at::zeros({10, 8})}, 0);
  CodebookTrainingParameters p;
  p.max_codewords = 3;
  Codebook cb = train_codebook(v, p);
  EXPECT_NEAR(cb.coverage, 90.0 / 100.0, 1e-9);
  EXPECT_TRUE(at::isfinite(cb.codewords).all().item<bool>());
}

TEST(CodebookTrainer, SmallerBudgetKeepsTheBestSupportedCodewordsFirst) {
  const at::Tensor centres = random_directions(4, 16, 11);
  // Cluster sizes 400, 200, 100, 50.
  at::Tensor v = at::cat({planted(centres.narrow(0, 0, 1), 400, 0.001, 12),
                          planted(centres.narrow(0, 1, 1), 200, 0.001, 13),
                          planted(centres.narrow(0, 2, 1), 100, 0.001, 14),
                          planted(centres.narrow(0, 3, 1), 50, 0.001, 15)},
                         0);
  CodebookTrainingParameters p;
  p.max_codewords = 4;
  Codebook cb = train_codebook(v, p);
  std::vector<double> curve = coverage_curve(cb.codewords, v, 0.98, {1, 2, 3, 4});
  EXPECT_NEAR(curve[0], 400.0 / 750, 1e-6);
  EXPECT_NEAR(curve[1], 600.0 / 750, 1e-6);
  EXPECT_NEAR(curve[3], 1.0, 1e-6);
  EXPECT_NEAR(codebook_coverage(cb.codewords.narrow(0, 0, 2), v, 0.98), 600.0 / 750, 1e-6);
}

TEST(CodebookTrainer, SameSeedGivesSameCodebook) {
  at::Tensor v = planted(random_directions(8, 16, 16), 50, 0.02, 17);
  CodebookTrainingParameters p;
  p.max_codewords = 8;
  EXPECT_TRUE(at::equal(train_codebook(v, p).codewords, train_codebook(v, p).codewords));
}

TEST(CodebookTrainer, NanInputIsRefused) {
  at::Tensor v = at::ones({4, 4});
  v[1][2] = NAN;
  EXPECT_SKV_ERROR(train_codebook(v, {}), "NaN or Inf");
}

}  // namespace
}  // namespace spindlekv
