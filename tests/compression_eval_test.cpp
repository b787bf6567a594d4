#include "eval/compression_eval.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "eval/eval_methods.h"
#include "eval/eval_report.h"
#include "model/synthetic_tasks.h"
#include "test_util.h"

namespace spindlekv {
namespace {

const std::string kSource = SPINDLEKV_SOURCE_DIR;

EvalOptions reference_options(const std::string& out) {
  EvalOptions o;
  o.model_dir = kSource + "/data/reference-model";
  o.text = kSource + "/calibration/heldout.txt";
  o.out_dir = out;
  return o;
}

TEST(CompressionEval, FullCacheReproducesTheModelCardPasskeyAccuracy) {
  // The model card's grid: lengths 256-1024 x 5 depths x 10 trials, seed 7,
  // filler from the held-out split: 0.985 (197 of 200) with the full cache.
  testutil::TempDir dir;
  EvalOptions o = reference_options(dir.path());
  o.methods = {"full"};
  o.tasks = {"passkey"};
  o.kv_dtype = "float32";  // the model card's cache
  o.passkey_lengths = {256, 512, 768, 1024};
  o.passkey_trials = 10;
  o.ppl_samples = 1;
  const auto records = run_eval(o);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].method, "full");
  EXPECT_NEAR(records[0].value, 0.985, 1e-9);
  EXPECT_NEAR(records[0].measured_ratio, 1.0, 1e-9);
}

TEST(CompressionEval, MethodsLandOnTheTargetRatioAndReportEveryTask) {
  testutil::TempDir dir;
  // A LongBench-format file of pass-key questions for the byte-level model.
  FillerText filler(std::string(4000, ' ') + "");
  {
    std::ifstream in(kSource + "/calibration/heldout.txt");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    filler = FillerText(text);
  }
  std::mt19937_64 rng(3);
  std::ofstream jsonl(dir.file("qa.jsonl"));
  for (int i = 0; i < 3; ++i) {
    RetrievalSample s = make_passkey_sample(filler, rng, 400, 0.5);
    const size_t q = s.prompt.rfind("\nWhat is the pass key?");
    jsonl << nlohmann::json{{"context", s.prompt.substr(0, q)},
                            {"input", s.prompt.substr(q)},
                            {"answers", {s.answer}}}
                 .dump()
          << "\n";
  }
  jsonl.close();
  EvalOptions o = reference_options(dir.path());
  o.methods = {"full", "snapkv", "snapkv+l0", "spindle-jit"};
  o.ratios = {0.3};
  o.tasks = {"ppl", "fidelity", "jsonl:" + dir.file("qa.jsonl")};
  o.ppl_samples = 2;
  o.ppl_context = 256;
  o.ppl_continuation = 32;
  o.jsonl_max_new = 6;
  const auto records = run_eval(o);
  // full: ppl, fidelity, 4 jsonl metrics; the others the same at one ratio.
  ASSERT_EQ(records.size(), 24u);
  double full_ppl = 0;
  for (const auto& r : records) {
    if (r.method == "full" && r.task == "ppl") full_ppl = r.value;
  }
  for (const auto& r : records) {
    const std::string what = r.method + " " + r.task + " " + r.metric;
    if (r.task == "ppl" || r.task == "fidelity") EXPECT_EQ(r.n, 2) << what;
    if (r.task.rfind("jsonl:", 0) == 0) EXPECT_EQ(r.n, 3) << what;
    if (r.metric == "contains" || r.metric == "exact_match") {
      // Accuracies carry their per-prompt outcomes and a Wilson interval.
      ASSERT_EQ(r.outcomes.size(), 3u) << what;
      EXPECT_LE(r.ci_low, r.value) << what;
      EXPECT_GE(r.ci_high, r.value) << what;
    }
    EXPECT_DOUBLE_EQ(r.memory.ratio, r.measured_ratio) << what;
    ASSERT_EQ(static_cast<int64_t>(r.prompt_ratios.size()), r.n) << what;  // each prompt's
    EXPECT_GE(r.memory.ratio_n1, r.memory.ratio_n16) << what;
    ASSERT_EQ(r.settings.kept_fraction.size(), 6u) << what;  // the reference model's layers
    if (r.method == "snapkv+l0") {
      // Layer 0 as token ids: all of it kept, its whole table charged as shared.
      EXPECT_GT(r.memory.shared_bytes_charged, 0.0) << what;
      EXPECT_DOUBLE_EQ(r.memory.shared_bytes_charged,
                       r.memory.shared_bytes_total / r.memory.shared_requests)
          << what;
      EXPECT_GT(r.memory.ratio, r.memory.ratio_excluding_shared) << what;
      EXPECT_DOUBLE_EQ(r.settings.kept_fraction[0], 1.0) << what;
    } else {
      // No calibrated codebook and no token table: nothing shared to charge.
      EXPECT_EQ(r.memory.shared_bytes_charged, 0.0) << what;
      EXPECT_DOUBLE_EQ(r.memory.ratio_excluding_shared, r.memory.ratio) << what;
    }
    if (r.method == "full") {
      if (r.task == "fidelity") EXPECT_EQ(r.value, 0.0);
      if (r.metric == "contains") EXPECT_GE(r.value, 2.0 / 3.0);  // the full cache retrieves
      EXPECT_DOUBLE_EQ(r.settings.kept_fraction[0], 1.0);
      continue;
    }
    EXPECT_NEAR(r.measured_ratio, 0.3, o.ratio_tolerance) << what;
    EXPECT_TRUE(r.ratio_matched);
    EXPECT_EQ(r.settings.reserve_ratio.n, r.n) << what;  // a setting per prompt
    EXPECT_LT(r.settings.reserve_ratio.max, 1.0) << what;
    if (r.task == "fidelity") EXPECT_GT(r.value, 0.0);  // something was evicted
    // Compression never predicts held-out text much better than the full cache.
    if (r.task == "ppl") EXPECT_GT(r.value, full_ppl - 0.05) << what;
  }
  write_eval_report(dir.file("out"), o, records, "{}");
  std::ifstream results(dir.file("out/results.json"));
  const auto j = nlohmann::json::parse(results);
  EXPECT_EQ(j.at("records").size(), records.size());
  std::ifstream csv(dir.file("out/results.csv"));
  std::string line;
  int lines = 0;
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 25);
  const auto& first = j.at("records").at(0);
  for (const char* key :
       {"held_bytes", "shared_bytes_total", "shared_bytes_charged", "full_bytes", "ratio",
        "ratio_n1", "ratio_n16", "ratio_excluding_shared", "kv_dtype", "shared_requests"}) {
    EXPECT_TRUE(first.at("memory").contains(key)) << key;
  }
  EXPECT_TRUE(first.contains("prompt_ratios"));
  EXPECT_TRUE(std::filesystem::exists(dir.file("out/summary.md")));
}

// A pure quantiser has no knob: one record at its own measured ratio, marked
// fixed. Eviction + a quantiser reaches the target by eviction.
TEST(CompressionEval, QuantisersReportTheirOwnRatioAndCombinationsReachTheTarget) {
  testutil::TempDir dir;
  EvalOptions o = reference_options(dir.path());
  o.methods = {"kivi4", "snapkv+kivi4"};
  o.ratios = {0.2};
  o.tasks = {"ppl"};
  o.ppl_samples = 2;
  o.ppl_context = 256;
  o.ppl_continuation = 32;
  o.kv_dtype = "float16";
  const auto records = run_eval(o);
  ASSERT_EQ(records.size(), 2u);
  const EvalRecord& kivi = records[0];
  EXPECT_TRUE(kivi.fixed_ratio);
  EXPECT_DOUBLE_EQ(kivi.target_ratio, kivi.measured_ratio);
  // head_dim 32 in float16: 16 bytes of codes + 4 of scale and zero per key
  // and per value (of 64), plus the recent rows held in float16.
  EXPECT_GT(kivi.measured_ratio, 20.0 / 64.0);
  EXPECT_LT(kivi.measured_ratio, 0.45);
  const EvalRecord& snap = records[1];
  EXPECT_FALSE(snap.fixed_ratio);
  EXPECT_TRUE(snap.ratio_matched);
  EXPECT_NEAR(snap.measured_ratio, 0.2, o.ratio_tolerance);
  EXPECT_LT(snap.settings.reserve_ratio.max, 1.0);
  const std::string table = summary_table(records, "ppl", "bits_per_byte");
  EXPECT_NE(table.find("fixed)"), std::string::npos) << table;
}

TEST(CompressionEval, KlIsZeroForTheFullCacheAndGrowsAsTheCodeCoarsens) {
  testutil::TempDir dir;
  EvalOptions o = reference_options(dir.path());
  o.methods = {"full", "tq2", "tq4"};
  o.tasks = {"kl"};
  o.ppl_samples = 3;
  o.ppl_context = 256;
  o.ppl_continuation = 32;
  const auto records = run_eval(o);
  ASSERT_EQ(records.size(), 3u);
  for (const EvalRecord& r : records) {
    EXPECT_EQ(r.task, "kl");
    EXPECT_EQ(r.metric, "kl_mean");
    EXPECT_EQ(r.n, 3);
    EXPECT_LE(r.ci_low, r.value) << r.method;
    EXPECT_GE(r.ci_high, r.value) << r.method;
    const auto detail = nlohmann::json::parse(r.detail_json);
    ASSERT_EQ(detail.at("per_context").size(), 3u);
    EXPECT_EQ(detail.at("tokens").get<int64_t>(), 3 * 32);
    EXPECT_GE(detail.at("p99").get<double>(), r.value);
  }
  EXPECT_EQ(records[0].value, 0.0);  // the full cache against itself
  EXPECT_GT(records[2].value, 0.0);
  EXPECT_GT(records[1].value, records[2].value);  // 2 bits move the predictions more than 4
}

// Context + continuation may fill the model's whole context: the decoding
// speed measured after the continuation then takes no step past it (and
// none at all when no position is left).
TEST(CompressionEval, PplFillsTheWholeContextWithoutPassingIt) {
  testutil::TempDir dir;
  EvalOptions o = reference_options(dir.path());
  o.methods = {"full", "snapkv"};
  o.ratios = {0.3};
  o.tasks = {"ppl"};
  o.ppl_samples = 1;
  o.ppl_continuation = 4;
  for (const int64_t free : {8, 0}) {  // the model's max_position_embeddings is 1024
    o.ppl_context = 1024 - 4 - free;
    o.out_dir = dir.file("free" + std::to_string(free));
    const auto records = run_eval(o);
    ASSERT_EQ(records.size(), 2u);
    for (const EvalRecord& r : records) {
      EXPECT_TRUE(std::isfinite(r.value)) << r.method;
      if (free > 0) {
        EXPECT_GT(r.decode_tokens_per_second, 0.0) << r.method;
      } else {
        EXPECT_EQ(r.decode_tokens_per_second, 0.0) << r.method;
      }
    }
  }
}

TEST(CompressionEval, ABfloat16ModelScoresCloseToFloat32AndIsRecorded) {
  testutil::TempDir dir;
  EvalOptions o = reference_options(dir.path());
  o.methods = {"full", "snapkv"};
  o.ratios = {0.3};
  o.tasks = {"ppl"};
  o.ppl_samples = 2;
  o.ppl_context = 256;
  o.ppl_continuation = 32;
  std::vector<double> bits[2];
  for (int i = 0; i < 2; ++i) {
    o.model_dtype = i == 0 ? "float32" : "bfloat16";
    o.out_dir = dir.file(o.model_dtype);
    for (const EvalRecord& r : run_eval(o)) bits[i].push_back(r.value);
  }
  ASSERT_EQ(bits[0].size(), 2u);
  ASSERT_EQ(bits[1].size(), 2u);
  for (int m = 0; m < 2; ++m) {
    EXPECT_TRUE(std::isfinite(bits[1][m]));
    EXPECT_NEAR(bits[1][m], bits[0][m], 0.05) << "method " << m;
    EXPECT_NE(bits[1][m], bits[0][m]) << "method " << m << ": the dtype changed nothing";
  }
  // results.json records it with every other option.
  EXPECT_EQ(nlohmann::json::parse(eval_options_json(o))["model_dtype"], "bfloat16");
  o.model_dtype = "fp64";
  EXPECT_SKV_ERROR(run_eval(o), "model dtype 'fp64' is not a model dtype");
}

TEST(CompressionEval, TheDeviceIsRecordedAndAnUnknownOrAbsentOneRefused) {
  testutil::TempDir dir;
  EvalOptions o = reference_options(dir.path());
  EXPECT_EQ(nlohmann::json::parse(eval_options_json(o))["device"], "cpu");
  o.device = "tpu";
  EXPECT_SKV_ERROR(run_eval(o), "device 'tpu' is not a device");
  if (!at::hasCUDA()) {
    o.device = "cuda";
    EXPECT_SKV_ERROR(run_eval(o), "this build of LibTorch has no CUDA");
  }
}

TEST(CompressionEval, UnknownNamesAndMissingArtifactsAreRefused) {
  testutil::TempDir dir;
  EvalOptions o = reference_options(dir.path());
  o.methods = {"snapkv", "quest"};
  EXPECT_SKV_ERROR(run_eval(o), "method 'quest' is unknown");
  o.methods = {"spindle"};
  EXPECT_SKV_ERROR(run_eval(o), "need --artifact");
  o.methods = {"snapkv", "full", "snapkv"};
  EXPECT_SKV_ERROR(run_eval(o), "method 'snapkv' is listed twice");
  o.methods = {"full"};
  o.ratios = {0.2, 0.3, 0.2};
  EXPECT_SKV_ERROR(run_eval(o), "ratio 0.2 is listed twice");
  o.ratios = {0.2};
  o.tasks = {"bleu"};
  EXPECT_SKV_ERROR(run_eval(o), "task 'bleu' is unknown");
}

TEST(EvalMethods, EveryKnownMethodHasASpec) {
  for (const auto& name : known_methods()) {
    const MethodSpec m = method_spec(name);
    EXPECT_EQ(m.name, name);
    EXPECT_TRUE(m.make_policy() != nullptr);
  }
  EXPECT_EQ(method_spec("pyramidinfer").gqa, GqaMode::kGroupAverage);
  for (const char* mean : {"snapkv-mean", "pyramidkv-mean", "h2o-mean"}) {
    EXPECT_EQ(method_spec(mean).gqa, GqaMode::kGroupAverage) << mean;
    EXPECT_FALSE(method_spec(mean).is_spindle());
  }
  EXPECT_EQ(method_spec("snapkv").gqa, GqaMode::kRepeat);
  const MethodSpec l0 = method_spec("snapkv-mean+l0");
  EXPECT_EQ(l0.name, "snapkv-mean+l0");
  EXPECT_TRUE(l0.token_id_layer0);
  EXPECT_EQ(l0.gqa, GqaMode::kGroupAverage);
  EXPECT_FALSE(method_spec("snapkv").token_id_layer0);
  EXPECT_SKV_ERROR(method_spec("full+l0"), "keeps layer 0 already");
  EXPECT_SKV_ERROR(method_spec("quest+l0"), "method 'quest' is unknown");
  EXPECT_TRUE(method_spec("spindle-jit").is_spindle());
  // The codebook on snapkv-mean's eviction: uniform budgets, group-mean scores.
  for (const char* mean : {"spindle-jit-mean", "spindle-mean"}) {
    const MethodSpec m = method_spec(mean);
    EXPECT_TRUE(m.is_spindle()) << mean;
    EXPECT_EQ(m.gqa, GqaMode::kGroupAverage) << mean;
    EXPECT_EQ(m.budget, BudgetKind::kUniform) << mean;
  }
  EXPECT_EQ(method_spec("spindle-jit-mean").codebook, CodebookMode::kJustInTime);
  EXPECT_FALSE(method_spec("spindle-jit-mean").needs_artifact());
  EXPECT_EQ(method_spec("spindle-mean").codebook, CodebookMode::kCalibrated);
  EXPECT_TRUE(method_spec("spindle-mean").needs_artifact());
  EXPECT_EQ(method_spec("pyramidkv").budget, BudgetKind::kPyramid);
  EXPECT_EQ(method_spec("spindle").budget, BudgetKind::kCalibrated);
  EXPECT_TRUE(method_spec("spindle-hybrid").needs_artifact());
  EXPECT_FALSE(method_spec("spindle-jit").needs_artifact());
  // Quantisers: alone (a fixed ratio) or as the suffix of a method that evicts.
  EXPECT_TRUE(method_spec("kivi2").fixed_ratio);
  EXPECT_EQ(method_spec("kivi2").codec, "kivi2");
  EXPECT_TRUE(method_spec("tq2.5").fixed_ratio);  // every codec of the runtime's registry
  EXPECT_TRUE(method_spec("q4_0").fixed_ratio);
  EXPECT_EQ(method_spec("snapkv-mean+tq3").codec, "tq3");
  EXPECT_EQ(method_spec("snapkv-mean+tq3").gqa, GqaMode::kGroupAverage);
  EXPECT_TRUE(method_spec("fp8-calibrated").needs_artifact());
  EXPECT_FALSE(method_spec("fp8").needs_artifact());
  const MethodSpec combo = method_spec("pyramidkv+kivi4+l0");
  EXPECT_EQ(combo.codec, "kivi4");
  EXPECT_EQ(combo.budget, BudgetKind::kPyramid);
  EXPECT_TRUE(combo.token_id_layer0);
  EXPECT_FALSE(combo.fixed_ratio);
  EXPECT_TRUE(method_spec("spindle+fp8").is_spindle());
  EXPECT_SKV_ERROR(method_spec("full+kivi4"), "a codec is a suffix of a method that evicts");
  EXPECT_SKV_ERROR(method_spec("kivi4+kivi2"), "a codec is a suffix");
  EXPECT_SKV_ERROR(method_spec("snapkv+tq9"), "method 'snapkv+tq9' is unknown");
  // +pool: a SpindleKV variant's eviction pools importance as SnapKV's does.
  EXPECT_EQ(method_spec("spindle").make_policy()->name(), "window-attention(repeat, pool 1)");
  EXPECT_EQ(method_spec("snapkv").make_policy()->name(), "window-attention(repeat, pool 7)");
  const MethodSpec pooled = method_spec("spindle-jit+pool+kivi4+l0");
  EXPECT_EQ(pooled.make_policy()->name(), "window-attention(repeat, pool 7)");
  EXPECT_EQ(pooled.codebook, CodebookMode::kJustInTime);
  EXPECT_EQ(pooled.codec, "kivi4");
  EXPECT_TRUE(pooled.token_id_layer0);
  EXPECT_EQ(method_spec("spindle+pool").budget, BudgetKind::kCalibrated);
  EXPECT_SKV_ERROR(method_spec("snapkv+pool"), "follows a SpindleKV variant");
  EXPECT_SKV_ERROR(method_spec("spindle+kivi4+pool"), "follows a SpindleKV variant");
}

}  // namespace
}  // namespace spindlekv
