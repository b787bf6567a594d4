// The calibrated byte plan of the export stage: the plan chosen from a
// sensitivity table, and the table measured on a model.
#include "export/codec_planner.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "export/codec_sensitivity.h"
#include "test_util.h"

namespace spindlekv {
namespace {

// tq2, tq3, tq4 rows of head_dim 64 in float16: codes + a float16 norm.
CodecSensitivity four_items() {
  CodecSensitivity s;
  s.candidates = {"tq2", "tq3", "tq4"};
  s.row_bytes = {18, 26, 34};
  s.keys = {{1.0, 0.2, 0.1}, {0.1, 0.09, 0.08}};
  s.values = {{0.5, 0.45, 0.0}, {0.3, 0.1, 0.05}};
  return s;
}

TEST(CodecPlanner, BuysTheMostKlPerByteWithinTheBudget) {
  // tq2.5's 22 bytes per row: 16 bytes over tq2 everywhere. Worked by hand:
  // keys of layer 0 to tq3 (0.8 for 8 bytes), then values of layer 1 to tq3
  // (0.2 for 8); values of layer 0 to tq4 would save 0.5 for all 16.
  const CodecPlan p = plan_codecs(four_items(), "plan2.5", "tq2.5", 22);
  EXPECT_EQ(p.keys, (std::vector<std::string>{"tq3", "tq2"}));
  EXPECT_EQ(p.values, (std::vector<std::string>{"tq2", "tq3"}));
  EXPECT_NEAR(p.predicted_kl, 0.2 + 0.1 + 0.5 + 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(p.row_bytes, 22);
  EXPECT_EQ(p.budget_codec, "tq2.5");
  // A larger budget ends at tq4 everywhere; the cheapest one at tq2.
  const CodecPlan all = plan_codecs(four_items(), "plan4", "tq4", 34);
  EXPECT_EQ(all.keys, (std::vector<std::string>{"tq4", "tq4"}));
  EXPECT_EQ(all.values, (std::vector<std::string>{"tq4", "tq4"}));
  const CodecPlan none = plan_codecs(four_items(), "plan2", "tq2", 18);
  EXPECT_EQ(none.keys, (std::vector<std::string>{"tq2", "tq2"}));
}

TEST(CodecPlanner, TakesAnUpgradeOffTheHullWhenOnlyItFits) {
  CodecSensitivity s = four_items();
  s.keys = {{0.5, 0.45, 0.0}};  // tq3 lies above the tq2 -> tq4 chord
  s.values = {{0.0, 0.0, 0.0}};
  // 8 bytes over tq2 for the pair: tq4's 16 do not fit, tq3's 8 do.
  const CodecPlan p = plan_codecs(s, "plan-x", "tq2.5", 22);
  EXPECT_EQ(p.keys[0], "tq3");
  EXPECT_EQ(p.values[0], "tq2");
}

TEST(CodecPlanner, ABudgetBelowTheCheapestCandidateIsRefused) {
  EXPECT_SKV_ERROR(plan_codecs(four_items(), "plan1", "tq1", 10), "costs 18 bytes per row");
  CodecSensitivity bad = four_items();
  bad.values[1].pop_back();
  EXPECT_SKV_ERROR(plan_codecs(bad, "plan3", "tq3", 26), "layer 1 candidates");
}

// An artifact of `c`'s geometry with nothing calibrated in it.
Artifact bare_artifact(const ModelConfig& c) {
  Artifact a;
  a.num_layers = c.num_layers;
  a.num_heads = c.num_heads;
  a.num_kv_heads = c.num_kv_heads;
  a.head_dim = c.head_dim;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    ArtifactLayer L;
    L.key_codebook = at::zeros({c.num_kv_heads, 1, c.head_dim});
    L.value_codebook = at::zeros({c.num_kv_heads, 1, c.head_dim});
    L.key_sizes = L.value_sizes = std::vector<int64_t>(c.num_kv_heads, 0);
    L.key_coverage = L.value_coverage = std::vector<double>(c.num_kv_heads, 0.0);
    a.layers.push_back(L);
  }
  return a;
}

TEST(CodecSensitivity, CoarserCodesCostMoreKlAndAnExactOneNone) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  const LlamaModel model = LlamaModel::random(c, 5, 0.3);
  CodecSensitivityOptions o;
  o.candidates = {"fp16", "tq2", "tq4"};
  o.context = 16;
  o.dtype = StorageDtype::kFloat16;
  at::manual_seed(2);
  for (int i = 0; i < 2; ++i) {
    at::Tensor ids = at::randint(0, c.vocab_size, {24}, at::kLong);
    o.sequences.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + 24);
  }
  int64_t calls = 0;
  const CodecSensitivity s =
      measure_codec_sensitivity(model, bare_artifact(c), o, [&](int64_t done, int64_t total) {
        EXPECT_EQ(total, 2 * c.num_layers);
        EXPECT_EQ(done, ++calls);
      });
  EXPECT_EQ(calls, 2 * c.num_layers);
  EXPECT_EQ(s.samples, 2);
  EXPECT_EQ(s.continuation, 8);
  ASSERT_EQ(s.row_bytes.size(), 3u);
  EXPECT_DOUBLE_EQ(s.row_bytes[0], 8 * 2);          // float16 rows
  EXPECT_DOUBLE_EQ(s.row_bytes[1], 8 * 2 / 8 + 2);  // 2-bit codes + float16 norm
  EXPECT_DOUBLE_EQ(s.row_bytes[2], 8 * 4 / 8 + 2);
  double tq2 = 0, tq4 = 0;
  for (const auto* side : {&s.keys, &s.values}) {
    ASSERT_EQ(side->size(), static_cast<size_t>(c.num_layers));
    for (const auto& row : *side) {
      EXPECT_LT(row[0], 1e-12);  // rows kept in the storage dtype change nothing
      EXPECT_GT(row[1], 0.0);
      EXPECT_TRUE(std::isfinite(row[1]) && std::isfinite(row[2]));
      tq2 += row[1];
      tq4 += row[2];
    }
  }
  EXPECT_LT(tq4, tq2);
  // Refusals name the candidate and the lengths.
  o.candidates = {"fp8-calibrated"};
  EXPECT_SKV_ERROR(measure_codec_sensitivity(model, bare_artifact(c), o), "fp8-calibrated");
  o.candidates = {"tq2"};
  o.context = 24;
  EXPECT_SKV_ERROR(measure_codec_sensitivity(model, bare_artifact(c), o), "no continuation");
}

}  // namespace
}  // namespace spindlekv
