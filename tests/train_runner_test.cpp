#include "train/train_runner.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "capture/capture_runner.h"
#include "core/atomic_file.h"
#include "test_util.h"

namespace spindlekv {
namespace {
namespace fs = std::filesystem;

class TrainRunner : public ::testing::Test {
 protected:
  void SetUp() override {
    testutil::write_byte_model(dir_.file("model"), 31);
    testutil::write_sample_text(dir_.file("text.txt"), 60);
    CaptureOptions c;
    c.model_dir = dir_.file("model");
    c.text_paths = {dir_.file("text.txt")};
    c.out = dir_.file("cap.h5");
    c.seq_len = 64;
    c.window = 8;
    c.max_sequences = 20;
    run_capture(c);
  }
  TrainOptions options() const {
    TrainOptions o;
    o.capture = dir_.file("cap.h5");
    o.out = dir_.file("codebooks.h5");
    o.max_codewords = 32;
    o.trainer.kmeans_iterations = 5;
    return o;
  }
  testutil::TempDir dir_;
};

TEST_F(TrainRunner, WritesPerHeadCodebooksThatReadBack) {
  TrainOptions o = options();
  CodebookFile written = run_train(o);
  CodebookFile f = read_codebook_file(o.out);
  ASSERT_EQ(f.layers.size(), 2u);
  EXPECT_EQ(f.metadata.sharing, "per-head");
  EXPECT_EQ(f.metadata.num_kv_heads, 2);
  const LayerCodebooks& L = f.layer(1);
  EXPECT_EQ(L.keys.codewords.size(0), 2);
  EXPECT_EQ(L.keys.codewords.size(2), 8);
  EXPECT_LE(L.keys.codewords.size(1), 32);
  EXPECT_TRUE(at::equal(L.keys.codewords, written.layer(1).keys.codewords));
  for (size_t g = 0; g < 2; ++g) {
    EXPECT_GT(L.keys.heldout_coverage[g], 0.0);
    EXPECT_LE(L.keys.heldout_coverage[g], 1.0);
    EXPECT_EQ(L.keys.heldout_curve[g].size(), f.metadata.curve_sizes.size());
    // The curve never falls as the codebook grows.
    for (size_t i = 1; i < L.keys.heldout_curve[g].size(); ++i) {
      EXPECT_GE(L.keys.heldout_curve[g][i], L.keys.heldout_curve[g][i - 1]);
    }
  }
  EXPECT_EQ(f.metadata.model_fingerprint.size(), 98u);
  EXPECT_SKV_ERROR(f.layer(7), "no layer 7 (layers present: 0, 1)");
}

TEST_F(TrainRunner, SharedCodebookHasOneGroup) {
  TrainOptions o = options();
  o.sharing = "shared";
  o.layers = "0";
  CodebookFile f = run_train(o);
  ASSERT_EQ(f.layers.size(), 1u);
  EXPECT_EQ(f.layers[0].values.codewords.size(0), 1);
}

TEST_F(TrainRunner, TargetCoverageShrinksTheCodebook) {
  TrainOptions o = options();
  o.target_coverage = 0.05;
  CodebookFile f = run_train(o);
  for (const auto& L : f.layers) {
    for (size_t g = 0; g < L.values.sizes.size(); ++g) EXPECT_LT(L.values.sizes[g], 32);
  }
}

TEST_F(TrainRunner, CaptureOfAnotherModelIsRefused) {
  testutil::write_byte_model(dir_.file("other"), 32);
  TrainOptions o = options();
  o.model_dir = dir_.file("other");
  EXPECT_SKV_ERROR(run_train(o), "was made with another model");
  EXPECT_FALSE(fs::exists(o.out));
}

TEST_F(TrainRunner, MissingLayerIsNamed) {
  TrainOptions o = options();
  o.layers = "3";
  EXPECT_SKV_ERROR(run_train(o), "outside the model's layers 0-1");
}

TEST_F(TrainRunner, CorruptCaptureIsRefused) {
  const std::string bytes = read_file(dir_.file("cap.h5"));
  testutil::write_bytes(dir_.file("bad.h5"), bytes.substr(0, bytes.size() / 3));
  TrainOptions o = options();
  o.capture = dir_.file("bad.h5");
  EXPECT_SKV_ERROR(run_train(o), "bad.h5");
  testutil::write_bytes(dir_.file("text.h5"), "not hdf5 at all");
  o.capture = dir_.file("text.h5");
  EXPECT_SKV_ERROR(run_train(o), "not an HDF5 file");
}

TEST_F(TrainRunner, ExistingOutputIsKeptWithoutOverwrite) {
  TrainOptions o = options();
  write_file_atomically(o.out, "previous");
  EXPECT_SKV_ERROR(run_train(o), "exists (use --overwrite");
  EXPECT_EQ(read_file(o.out), "previous");
}

}  // namespace
}  // namespace spindlekv
