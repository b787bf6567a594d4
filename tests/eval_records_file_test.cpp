#include "eval/eval_records_file.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "eval/compression_eval.h"
#include "test_util.h"

namespace spindlekv {
namespace {

const std::string kSource = SPINDLEKV_SOURCE_DIR;

EvalRecord sample_record() {
  EvalRecord r;
  r.method = "snapkv-mean+l0";
  r.task = "passkey";
  r.metric = "accuracy";
  r.value = 0.75;
  r.n = 4;
  r.ci_low = 0.3;
  r.ci_high = 0.95;
  r.outcomes = {1, 0, 1, 1};
  r.target_ratio = 0.2;
  r.measured_ratio = 0.2041;
  r.ratio_matched = true;
  r.paper_ratio = 0.19;
  r.memory.held_bytes = 1234.5;
  r.memory.shared_bytes_total = 136;
  r.memory.shared_bytes_charged = 17;
  r.memory.ratio_n1 = 0.31;
  r.memory.ratio_n16 = 0.2;
  r.prompt_ratios = {0.2041, 0.19, 0.2182, 0.2041};
  r.memory.kv_dtype = "float16";
  r.memory.shared_requests = 8;
  r.settings.reserve_ratio.add(0.5);
  r.settings.reserve_ratio.add(0.25);
  r.settings.kept_fraction = {1.0, 0.125};
  r.compression_ms = 3.25;
  r.detail_json = R"({"cells":[{"length":256,"correct":3}]})";
  return r;
}

void expect_same(const EvalRecord& a, const EvalRecord& b) {
  EXPECT_EQ(a.method, b.method);
  EXPECT_EQ(a.task, b.task);
  EXPECT_EQ(a.metric, b.metric);
  EXPECT_EQ(a.value, b.value) << a.method << " " << a.task;
  EXPECT_EQ(a.n, b.n);
  EXPECT_EQ(std::isnan(a.ci_low), std::isnan(b.ci_low));
  if (!std::isnan(a.ci_low)) EXPECT_EQ(a.ci_low, b.ci_low);
  EXPECT_EQ(a.outcomes, b.outcomes);
  EXPECT_EQ(a.target_ratio, b.target_ratio);
  EXPECT_EQ(a.measured_ratio, b.measured_ratio);
  EXPECT_EQ(a.ratio_matched, b.ratio_matched);
  EXPECT_EQ(a.fixed_ratio, b.fixed_ratio);
  EXPECT_EQ(a.memory.held_bytes, b.memory.held_bytes);
  EXPECT_EQ(a.memory.ratio, b.memory.ratio);
  EXPECT_EQ(a.memory.shared_bytes_total, b.memory.shared_bytes_total);
  EXPECT_EQ(a.memory.shared_bytes_charged, b.memory.shared_bytes_charged);
  EXPECT_EQ(a.memory.ratio_n1, b.memory.ratio_n1);
  EXPECT_EQ(a.memory.ratio_n16, b.memory.ratio_n16);
  EXPECT_EQ(a.prompt_ratios, b.prompt_ratios);
  EXPECT_EQ(a.settings.reserve_ratio.n, b.settings.reserve_ratio.n);
  EXPECT_EQ(a.settings.kept_fraction, b.settings.kept_fraction);
}

TEST(EvalRecordsFile, RecordRoundTripsThroughJson) {
  const EvalRecord r = sample_record();
  const EvalRecord back =
      eval_record_from_json(nlohmann::json::parse(eval_record_to_json(r).dump()));
  expect_same(r, back);
  EXPECT_EQ(back.memory.kv_dtype, "float16");
  EXPECT_EQ(back.memory.shared_requests, 8);
  EXPECT_EQ(back.settings.reserve_ratio.min, 0.25);
  EXPECT_EQ(back.settings.reserve_ratio.max, 0.5);
  EXPECT_EQ(back.compression_ms, 3.25);
  EXPECT_EQ(nlohmann::json::parse(back.detail_json), nlohmann::json::parse(r.detail_json));
  // A perplexity record: no interval, no outcomes, no search (n = 0 ranges).
  EvalRecord ppl;
  ppl.method = "full";
  ppl.task = "ppl";
  ppl.metric = "bits_per_byte";
  ppl.value = 1.8;
  const EvalRecord ppl_back =
      eval_record_from_json(nlohmann::json::parse(eval_record_to_json(ppl).dump()));
  expect_same(ppl, ppl_back);
  EXPECT_TRUE(std::isnan(ppl_back.ci_high));
}

TEST(EvalRecordsFile, ReadRefusesBrokenFilesAndAnotherRunsOptions) {
  testutil::TempDir dir;
  EvalPartialResults partial;
  partial.signature = {{"passkey_trials", 4}, {"seed", 7}};
  partial.settings.push_back({"snapkv-mean+l0", 0.2, {sample_record()}});
  const std::string path = dir.file("results.partial.json");
  write_eval_partial(path, partial);
  const EvalPartialResults back = read_eval_partial(path, partial.signature);
  ASSERT_EQ(back.settings.size(), 1u);
  EXPECT_EQ(back.settings[0].method, "snapkv-mean+l0");
  EXPECT_EQ(back.settings[0].target, 0.2);
  ASSERT_EQ(back.settings[0].records.size(), 1u);
  expect_same(back.settings[0].records[0], sample_record());

  EXPECT_SKV_ERROR(read_eval_partial(path, {{"passkey_trials", 8}, {"seed", 7}}),
                   "another 'passkey_trials' (4; this run has 8)");
  EXPECT_SKV_ERROR(read_eval_partial(dir.file("none.json"), partial.signature), "none.json");
  { std::ofstream(dir.file("results.json")) << R"({"records": []})"; }
  EXPECT_SKV_ERROR(read_eval_partial(dir.file("results.json"), partial.signature),
                   "not a partial-results file");
  nlohmann::json bad = nlohmann::json::parse(eval_record_to_json(sample_record()).dump());
  bad.erase("memory");
  EXPECT_SKV_ERROR(eval_record_from_json(bad), "record has no key 'memory'");
  bad = nlohmann::json::parse(eval_record_to_json(sample_record()).dump());
  bad["n"] = "four";
  EXPECT_SKV_ERROR(eval_record_from_json(bad), "record key 'n' has the wrong type");
}

TEST(EvalRecordsFile, SignatureNamesInputsByContentNotPath) {
  testutil::TempDir dir;
  EvalOptions o;
  o.text = kSource + "/calibration/heldout.txt";
  o.tasks = {"ppl"};
  const nlohmann::json here = eval_run_signature(o, "model", "");
  // The same text elsewhere, another output directory, methods and device:
  // the same run.
  std::filesystem::copy_file(o.text, dir.file("copy.txt"));
  EvalOptions moved = o;
  moved.text = dir.file("copy.txt");
  moved.out_dir = dir.path();
  moved.methods = {"full"};
  moved.device = "cuda:1";
  EXPECT_EQ(eval_run_signature(moved, "model", ""), here);
  // Edited text, another model or artifact: another run.
  { std::ofstream(dir.file("copy.txt"), std::ios::app) << "more"; }
  EXPECT_NE(eval_run_signature(moved, "model", ""), here);
  EXPECT_NE(eval_run_signature(o, "other model", ""), here);
  EXPECT_NE(eval_run_signature(o, "model", "checksum"), here);
  o.text = dir.file("missing.txt");
  EXPECT_SKV_ERROR(eval_run_signature(o, "model", ""), "missing.txt");
}

EvalOptions small_options(const std::string& out) {
  EvalOptions o;
  o.model_dir = kSource + "/data/reference-model";
  o.text = kSource + "/calibration/heldout.txt";
  o.out_dir = out;
  o.methods = {"streaming", "kivi4", "snapkv-mean"};
  o.ratios = {0.2, 0.3};
  o.tasks = {"ppl", "passkey"};
  o.ppl_samples = 1;
  o.ppl_context = 256;
  o.ppl_continuation = 32;
  o.passkey_lengths = {256};
  o.passkey_depths = {0.5};
  o.passkey_trials = 3;
  return o;
}

TEST(EvalContinuation, ResumedRunEqualsUninterruptedRun) {
  testutil::TempDir dir;
  const EvalOptions o = small_options(dir.path());
  const std::vector<EvalRecord> whole = run_eval(o);
  ASSERT_EQ(whole.size(), 10u);  // (2 + 1 + 2 settings) x (ppl, passkey)

  EvalContinuation c;
  c.partial_path = dir.file("results.partial.json");
  // Interrupted when the third setting starts: two are finished and kept.
  auto stop_at_third = [](const EvalProgress& p) {
    if (!p.method.empty() && p.done == 2) throw std::runtime_error("interrupted");
  };
  EXPECT_SKV_ERROR(run_eval(o, stop_at_third, c), "interrupted");
  ASSERT_TRUE(std::filesystem::exists(c.partial_path));

  c.resume = true;
  std::vector<std::string> ran;
  const std::vector<EvalRecord> resumed = run_eval(
      o,
      [&](const EvalProgress& p) {
        if (!p.method.empty()) ran.push_back(p.method);
      },
      c);
  EXPECT_EQ(ran, (std::vector<std::string>{"kivi4", "snapkv-mean", "snapkv-mean"}));
  ASSERT_EQ(resumed.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) expect_same(whole[i], resumed[i]);

  // A run with other options does not take these settings.
  EvalOptions other = o;
  other.passkey_trials = 4;
  EXPECT_SKV_ERROR(run_eval(other, {}, c), "another 'passkey_trials'");
}

}  // namespace
}  // namespace spindlekv
