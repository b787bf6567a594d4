#include "eval/eval_report.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "eval/compression_eval.h"
#include "eval/eval_records_file.h"
#include "test_util.h"

namespace spindlekv {
namespace {

EvalRecord record(const std::string& method, const std::string& task, const std::string& metric,
                  double value, double target, double measured, bool fixed = false) {
  EvalRecord r;
  r.method = method;
  r.task = task;
  r.metric = metric;
  r.value = value;
  r.n = 4;
  r.target_ratio = target;
  r.measured_ratio = measured;
  r.fixed_ratio = fixed;
  r.memory.ratio = measured;
  r.memory.ratio_n1 = measured;
  r.memory.ratio_n16 = measured;
  r.memory.kv_dtype = "float16";
  r.detail_json = "{}";
  return r;
}

// A KL record with its per-context means (what the sign test pairs).
EvalRecord kl(const std::string& method, double target, double measured,
              const std::vector<double>& per_context, bool fixed = false) {
  double mean = 0;
  for (double v : per_context) mean += v / per_context.size();
  EvalRecord r = record(method, "kl", "kl_mean", mean, target, measured, fixed);
  r.ci_low = mean * 0.9;
  r.ci_high = mean * 1.1;
  r.detail_json = nlohmann::json{{"per_context", per_context}}.dump();
  return r;
}

// The table's data rows (the header and separator dropped), each split on '|'.
std::vector<std::vector<std::string>> rows_of(const std::string& table) {
  std::vector<std::vector<std::string>> out;
  std::istringstream in(table);
  std::string line;
  for (int i = 0; std::getline(in, line); ++i) {
    if (i < 2) continue;
    std::vector<std::string> cells;
    std::istringstream cs(line);
    std::string cell;
    std::getline(cs, cell, '|');  // before the first '|'
    while (std::getline(cs, cell, '|')) {
      const size_t a = cell.find_first_not_of(' '), b = cell.find_last_not_of(' ');
      cells.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
    }
    out.push_back(cells);
  }
  return out;
}

TEST(WhichMethodTable, PicksTheBestRecordThatFitsUnderEachRow) {
  std::vector<EvalRecord> records = {
      kl("full", 1, 1, {0, 0, 0, 0}),
      kl("tq3", 0.203, 0.203, {0.04, 0.04, 0.04, 0.04}, /*fixed=*/true),
      kl("kivi2", 0.195, 0.195, {0.13, 0.12, 0.14, 0.13}, /*fixed=*/true),
      kl("snapkv-mean+kivi4", 0.1, 0.099, {0.06, 0.05, 0.07, 0.06}),
      kl("snapkv-mean+tq3", 0.1, 0.104, {0.05, 0.04, 0.06, 0.05}),
      kl("snapkv-mean+plan", 0.1, 0.125, {0.01, 0.01, 0.01, 0.01}),
  };
  records.back().ratio_matched = false;  // it missed its target
  const auto rows = rows_of(which_method_table(records, "kl", "kl_mean", 0.01));
  // Rows: the searched target 0.10 and the fixed codecs' own ratios.
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0][0], "<= 0.1");
  // The missed cell (0.125) does not count at 0.10; one landed at 0.104 does.
  EXPECT_EQ(rows[0][1], "snapkv-mean+tq3");
  EXPECT_EQ(rows[0][3], "0.104");
  EXPECT_EQ(rows[0][4], "snapkv-mean+kivi4");
  // Lower on 4 of 4 contexts: the exact sign test gives 2 / 2^4.
  EXPECT_EQ(rows[0][6], "0.12");
  EXPECT_EQ(rows[0][7], "0.0000 [0.0000, 0.0000]");
  // At 0.195 the missed cell fits by its measured 0.125 and is best; tq3
  // (0.203) does not fit yet, so the runner-up is a cell searched to 0.10.
  EXPECT_EQ(rows[1][0], "<= 0.195");
  EXPECT_EQ(rows[1][1], "snapkv-mean+plan");
  EXPECT_EQ(rows[1][4], "snapkv-mean+tq3");
  EXPECT_EQ(rows[2][0], "<= 0.203");
  EXPECT_EQ(rows[2][1], "snapkv-mean+plan");
  EXPECT_EQ(rows[2][4], "tq3");
}

TEST(WhichMethodTable, RunnerUpIsAnotherMethodAndTiesGoToFewerBytes) {
  const std::vector<EvalRecord> records = {
      kl("a", 0.1, 0.1, {0.02, 0.02}),
      kl("a", 0.2, 0.2, {0.01, 0.01}),
      kl("b", 0.2, 0.2, {0.03, 0.03}),
      kl("c", 0.1722, 0.1722, {0.01, 0.01}, true),
      kl("d", 0.17226, 0.17226, {0.5, 0.5}, true),
  };
  const auto rows = rows_of(which_method_table(records, "kl", "kl_mean", 0.01));
  // 0.1722 and 0.17226 print alike: one row.
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1][0], "<= 0.172");
  // At 0.20, "a" (0.01 at 0.2) ties "c" (0.01 at 0.1722): fewer bytes win;
  // the runner-up is a, not "a" at another ratio.
  EXPECT_EQ(rows[2][1], "c");
  EXPECT_EQ(rows[2][4], "a");
  EXPECT_EQ(rows[2][6], "1");  // no context differs
}

TEST(WhichMethodTable, HigherIsBetterForAccuraciesAndPairsTheirOutcomes) {
  EvalRecord a = record("snapkv-mean+tq3", "passkey", "accuracy", 1.0, 0.1, 0.1);
  a.outcomes = {1, 1, 1, 1, 1, 1};
  EvalRecord b = record("snapkv-mean+kivi4", "passkey", "accuracy", 0.5, 0.1, 0.1);
  b.outcomes = {1, 0, 1, 0, 1, 0};
  EvalRecord full = record("full", "passkey", "accuracy", 1.0, 1, 1);
  full.ci_low = 0.6;
  full.ci_high = 1.0;
  const auto rows = rows_of(which_method_table({full, b, a}, "passkey", "accuracy", 0.01));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][1], "snapkv-mean+tq3");
  EXPECT_EQ(rows[0][4], "snapkv-mean+kivi4");
  EXPECT_EQ(rows[0][6], "0.25");  // 3 discordant pairs, all one way: 2 / 2^3
  EXPECT_EQ(rows[0][7], "1.000 [0.60, 1.00]");
  EXPECT_TRUE(lower_is_better("kl_mean"));
  EXPECT_TRUE(lower_is_better("bits_per_byte"));
  EXPECT_FALSE(lower_is_better("accuracy"));
}

TEST(EvalSummaryPage, SaysHowItsRunChargedSharedTables) {
  EvalOptions o;
  o.model_dir = "m";
  const std::vector<EvalRecord> now = {
      record("snapkv-mean", "ppl", "bits_per_byte", 1.5, 0.1, 0.1)};
  const std::string page = eval_summary_page(o, now, R"({"tool_version": "9.9", "seconds": 12})");
  EXPECT_NE(page.find("spindlekv 9.9, 12 s"), std::string::npos);
  EXPECT_NE(page.find("every shared table the method needs, whole"), std::string::npos);
  EXPECT_NE(page.find("teacher-forced"), std::string::npos);  // the task's protocol
  EXPECT_EQ(page, eval_summary_page(o, now, R"({"tool_version": "9.9", "seconds": 12})"));
  // A record from before whole-table charging has no ratio_n1.
  std::vector<EvalRecord> old = now;
  old[0].memory.ratio_n1 = std::nan("");
  const std::string old_page = eval_summary_page(o, old, "{}");
  EXPECT_NE(old_page.find("NOT charged in full"), std::string::npos);
  EXPECT_EQ(old_page.find("every shared table the method needs, whole"), std::string::npos);
}

TEST(EvalResultsFile, ReadsWhatTheEvalWroteAndTheSamePageComesBack) {
  testutil::TempDir dir;
  EvalOptions o;
  o.model_dir = "some/model";
  o.ratios = {0.1};
  o.shared_requests = 16;
  const std::vector<EvalRecord> records = {kl("full", 1, 1, {0, 0}),
                                           kl("snapkv-mean+tq3", 0.1, 0.1, {0.05, 0.04})};
  nlohmann::ordered_json header = {{"tool_version", "0.1.0"},
                                   {"date", "2026-12-08 01:00 UTC"},
                                   {"options", nlohmann::json::parse(eval_options_json(o))},
                                   {"threads", 2},
                                   {"seconds", 3.5}};
  write_eval_report(dir.path(), o, records, header.dump());
  const EvalResultsFile back = read_eval_results(dir.file("results.json"));
  EXPECT_EQ(back.options.model_dir, "some/model");
  EXPECT_EQ(back.options.shared_requests, 16);
  ASSERT_EQ(back.records.size(), 2u);
  EXPECT_EQ(back.records[1].method, "snapkv-mean+tq3");
  EXPECT_FALSE(back.header.contains("records"));
  std::ifstream in(dir.file("summary.md"));
  const std::string written((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(eval_summary_page(back.options, back.records, back.header.dump()), written);
  EXPECT_NE(written.find("Run finished 2026-12-08 01:00 UTC"), std::string::npos);
}

TEST(EvalResultsFile, OptionsOfOlderRunsKeepDefaultsAndUnknownKeysAreRefused) {
  const EvalOptions o = eval_options_from_json(R"({"model_dir": "x", "seed": 3})");
  EXPECT_EQ(o.model_dir, "x");
  EXPECT_EQ(o.seed, 3u);
  EXPECT_EQ(o.device, EvalOptions{}.device);  // not in the file: the default
  EXPECT_SKV_ERROR(eval_options_from_json(R"({"model_dir": "x", "colour": 1})"),
                   "unknown key 'colour'");
  EXPECT_SKV_ERROR(eval_options_from_json(R"({"seed": "seven"})"), "wrong type");
  EXPECT_SKV_ERROR(eval_options_from_json("[1]"), "must be a JSON object");
  testutil::TempDir dir;
  write_file_atomically(dir.file("r.json"), R"({"records": []})");
  EXPECT_SKV_ERROR(read_eval_results(dir.file("r.json")), "needs the keys 'options' and 'records'");
  EXPECT_SKV_ERROR(read_eval_results(dir.file("none.json")), "none.json");
}

}  // namespace
}  // namespace spindlekv
