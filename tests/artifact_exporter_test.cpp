#include "export/artifact_exporter.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "capture/capture_file.h"
#include "capture/capture_runner.h"
#include "core/model_fingerprint.h"
#include "model/compressed_prefill.h"
#include "model/llama_model.h"
#include "runtime/compressed_cache.h"
#include "runtime/storage_cost.h"
#include "test_util.h"
#include "train/train_runner.h"

namespace spindlekv {
namespace {

class ArtifactExporter : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testutil::TempDir();
    testutil::write_byte_model(dir_->file("model"), 31);
    testutil::write_byte_model(dir_->file("other"), 32);
    testutil::write_sample_text(dir_->file("text.txt"), 60);
    CaptureOptions c;
    c.model_dir = dir_->file("model");
    c.text_paths = {dir_->file("text.txt")};
    c.out = dir_->file("cap.h5");
    c.seq_len = 64;
    c.window = 8;
    c.max_sequences = 20;
    run_capture(c);
    TrainOptions t;
    t.capture = c.out;
    t.out = dir_->file("codebooks.h5");
    t.max_codewords = 32;
    t.trainer.kmeans_iterations = 5;
    run_train(t);
  }
  static void TearDownTestSuite() { delete dir_; }
  ExportOptions options(const std::string& out) const {
    ExportOptions o;
    o.codebooks = dir_->file("codebooks.h5");
    o.capture = dir_->file("cap.h5");
    o.out = dir_->file(out);
    return o;
  }
  static testutil::TempDir* dir_;
};
testutil::TempDir* ArtifactExporter::dir_ = nullptr;

TEST_F(ArtifactExporter, WritesAnArtifactTheRuntimeLoadsForItsModel) {
  ExportOptions o = options("a.safetensors");
  o.model_dir = dir_->file("model");
  const ExportResult r = run_export(o);
  const std::string fp = fingerprint_model(dir_->file("model")).to_string();
  auto a = std::make_shared<Artifact>(load_artifact_for_model(o.out, fp));
  EXPECT_EQ(a->num_layers, 2);
  EXPECT_EQ(a->window, 8);  // the capture's
  EXPECT_EQ(a->layers[1].key_codebook.size(0), 2);
  EXPECT_EQ(a->calibrated.fractions, r.budgets.calibrated.fractions);
  // The runtime uses it: calibrated codes and calibrated budgets.
  const LlamaModel model = LlamaModel::load(dir_->file("model"));
  CompressionParameters p;
  p.reserve_ratio = 0.5;
  p.window = 8;
  p.budget = BudgetKind::kCalibrated;
  p.codebook = CodebookMode::kCalibrated;
  CompressedCache cache(model.config().geometry(), 1, p, a);
  std::vector<int64_t> prompt;
  for (int i = 0; i < 48; ++i) prompt.push_back("The river bends and the road goes on. "[i % 38]);
  prefill_compressed(model, prompt, cache, 0);
  const MemoryReport m = cache.memory();
  EXPECT_GT(m.layers[0].calibrated_vectors, 0);
  // The request's own bytes shrink; the whole codebook, charged to this one
  // 48-token request, may cost more than its dense cache.
  EXPECT_LT(m.ratio_excluding_shared, 1.0);
  EXPECT_GT(m.ratio, m.ratio_excluding_shared);
  EXPECT_SKV_ERROR(
      load_artifact_for_model(o.out, fingerprint_model(dir_->file("other")).to_string()),
      "another model");
}

// fp8 scales: max |x| / 448 over every captured vector, per layer and KV head.
TEST_F(ArtifactExporter, Fp8ScalesAreTheCapturesLargestMagnitudes) {
  const ExportResult r = run_export(options("fp8.safetensors"));
  CaptureReader capture(dir_->file("cap.h5"));
  for (int64_t l = 0; l < r.artifact.num_layers; ++l) {
    const int64_t n = capture.vector_count(l);
    at::Tensor k = capture.read_keys(l, 0, n).to(at::kFloat).abs().amax({0, 2});
    at::Tensor v = capture.read_values(l, 0, n).to(at::kFloat).abs().amax({0, 2});
    EXPECT_TRUE(at::allclose(r.artifact.layers[l].fp8_key_scale, k / 448.0)) << l;
    EXPECT_TRUE(at::allclose(r.artifact.layers[l].fp8_value_scale, v / 448.0)) << l;
  }
  const Artifact loaded = load_artifact(dir_->file("fp8.safetensors"));
  EXPECT_TRUE(at::equal(loaded.layers[1].fp8_key_scale, r.artifact.layers[1].fp8_key_scale));
}

TEST_F(ArtifactExporter, RefusesAMismatchedModelAndExistingOutput) {
  ExportOptions o = options("b.safetensors");
  o.model_dir = dir_->file("other");
  EXPECT_SKV_ERROR(run_export(o), "another model");
  EXPECT_FALSE(std::filesystem::exists(o.out));
  o.model_dir.clear();
  run_export(o);
  EXPECT_SKV_ERROR(run_export(o), "exists (use --overwrite");
  // An existing output is bad input (exit 2), as in capture and train.
  try {
    run_export(o);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  }
  o.gqa_mode = "mean";
  o.overwrite = true;
  EXPECT_SKV_ERROR(run_export(o), "allowed: repeat, average");
}

TEST_F(ArtifactExporter, RefusesCodebooksOfAnotherCapture) {
  // A capture of other text: its calibration hash differs from the codebooks'.
  testutil::write_sample_text(dir_->file("text2.txt"), 61);
  CaptureOptions c;
  c.model_dir = dir_->file("model");
  c.text_paths = {dir_->file("text2.txt")};
  c.out = dir_->file("cap2.h5");
  c.seq_len = 64;
  c.window = 8;
  c.max_sequences = 4;
  run_capture(c);
  ExportOptions o = options("c.safetensors");
  o.capture = c.out;
  EXPECT_SKV_ERROR(run_export(o), "other calibration text");
}

// Budgets planned for float16 storage use its cost model (2-byte elements,
// int16 codes and float16 magnitudes), and the artifact says so.
TEST_F(ArtifactExporter, BudgetsArePlannedInTheStorageDtypesBytes) {
  ExportOptions o = options("half.safetensors");
  o.kv_dtype = "float16";
  const ExportResult half = run_export(o);
  const Artifact half_artifact = load_artifact(o.out);
  EXPECT_EQ(half_artifact.storage_dtype, "float16");
  // The recorded options are the ones the budgets were planned with.
  const auto recorded = nlohmann::json::parse(half_artifact.sources_json).at("options");
  EXPECT_EQ(recorded.at("budgets").at("element_bytes").get<int64_t>(), 2);
  EXPECT_EQ(recorded.at("budgets").at("slot_overhead_bytes").get<int64_t>(),
            storage::coded_slot_bytes(StorageDtype::kFloat16));
  ExportOptions f = options("full.safetensors");
  f.kv_dtype = "float32";
  const ExportResult full = run_export(f);
  EXPECT_EQ(load_artifact(dir_->file("full.safetensors")).storage_dtype, "float32");
  ASSERT_EQ(half.budgets.relative_token_cost.size(), full.budgets.relative_token_cost.size());
  for (size_t l = 0; l < half.budgets.relative_token_cost.size(); ++l) {
    // Same exact share, but fixed per-slot bytes weigh more against a
    // 2-byte dense token: (2*(2+2)+4) / (2*d*2) > (2*(4+4)+4) / (2*d*4) for d >= 2.
    EXPECT_GT(half.budgets.relative_token_cost[l], full.budgets.relative_token_cost[l]) << l;
  }
  o.kv_dtype = "fp8";
  o.out = dir_->file("bad.safetensors");
  EXPECT_SKV_ERROR(run_export(o), "storage dtype 'fp8' is unknown");
}

}  // namespace
}  // namespace spindlekv
