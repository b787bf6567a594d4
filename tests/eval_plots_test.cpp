#include "eval_plots.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.h"

namespace spindlekv::cli {
namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

EvalRecord record(const std::string& method, const std::string& task, double ratio, double v) {
  EvalRecord r;
  r.method = method;
  r.task = task;
  r.metric = "accuracy";
  r.value = v;
  r.measured_ratio = ratio;
  return r;
}

// Scripts name only the files beside them (a directory with a quote in its
// name cannot break them) and quote titles for gnuplot.
TEST(EvalPlots, ScriptsNameOnlyTheirOwnFilesAndQuoteTitles) {
  testutil::TempDir dir;
  const std::string plots = dir.file("it's plots");
  const std::vector<EvalRecord> records = {record("full", "jsonl:o'neil.jsonl", 1.0, 0.9),
                                           record("snapkv", "jsonl:o'neil.jsonl", 0.2, 0.5)};
  write_eval_plots(plots, records);
  const std::string stem = "jsonl_o_neil_jsonl_accuracy";
  ASSERT_TRUE(std::filesystem::exists(plots + "/" + stem + ".gp"));
  const std::string script = read(plots + "/" + stem + ".gp");
  EXPECT_EQ(script.find(dir.path()), std::string::npos) << script;
  EXPECT_NE(script.find("set output '" + stem + ".png.tmp'"), std::string::npos) << script;
  EXPECT_NE(script.find("'jsonl:o''neil.jsonl: accuracy against memory ratio'"), std::string::npos)
      << script;
  EXPECT_NE(script.find("'" + stem + ".dat' index 1"), std::string::npos) << script;
  const std::string data = read(plots + "/" + stem + ".dat");
  EXPECT_NE(data.find("# snapkv\n0.2 0.5 0.5 0.5"), std::string::npos) << data;
}

}  // namespace
}  // namespace spindlekv::cli
