// `spindlekv report RESULTS_JSON`: the summary page of a finished
// `spindlekv eval` run, rewritten from its results.json alone (the eval writes
// the same page as summary.md), or the short "which method at which memory"
// table the README shows. docs/results/ pages are regenerated with it, and
// tests/results_pages_test.sh checks that the committed pages equal its output.
#include <CLI/CLI.hpp>

#include <iostream>

#include "commands.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "eval/eval_records_file.h"
#include "eval/eval_report.h"

namespace spindlekv::cli {
namespace {

struct ReportOptions {
  std::string results;       ///< results.json of one eval run
  std::string which_method;  ///< "TASK:METRIC": print that table instead of the page
  std::string out;           ///< write here (atomically) instead of stdout
};

void run_report(const ReportOptions& o) {
  const EvalResultsFile run = read_eval_results(o.results);
  std::string text;
  if (o.which_method.empty()) {
    text = eval_summary_page(run.options, run.records, run.header.dump());
  } else {
    const size_t colon = o.which_method.rfind(':');
    SKV_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < o.which_method.size(),
              "--which-method must be TASK:METRIC (e.g. kl:kl_mean), not '", o.which_method, "'");
    const std::string task = o.which_method.substr(0, colon);
    const std::string metric = o.which_method.substr(colon + 1);
    bool found = false;
    for (const auto& r : run.records) found = found || (r.task == task && r.metric == metric);
    SKV_CHECK(found, "--which-method: '", o.results, "' has no records of task '", task,
              "' with metric '", metric, "'");
    text = which_method_table(run.records, task, metric, run.options.ratio_tolerance);
  }
  if (o.out.empty()) {
    std::cout << text;
  } else {
    write_file_atomically(o.out, text);
  }
}

}  // namespace

void register_report_command(CLI::App& app) {
  auto o = std::make_shared<ReportOptions>();
  CLI::App* sub = app.add_subcommand(
      "report", "Rewrite an eval run's summary page (or the which-method table) from results.json");
  sub->add_option("results", o->results, "results.json written by spindlekv eval")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--which-method", o->which_method,
                  "TASK:METRIC: print the best method per memory ratio for that task instead "
                  "(e.g. kl:kl_mean, passkey:accuracy)");
  sub->add_option("--out", o->out, "Write to this file (atomically) instead of standard output");
  sub->callback([o] { run_report(*o); });
}

}  // namespace spindlekv::cli
