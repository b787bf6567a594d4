// `spindlekv eval` outputs in one directory: results.json (the options, and
// one record per method, ratio and task, with the measured memory ratio),
// results.csv and summary.md (a table per task). Plotting is the CLI's
// (apps/spindlekv/eval_plots.h), not the library's.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "eval/compression_eval.h"

namespace spindlekv {

/// Writes results.json (`header_json` with the records added), results.csv
/// and summary.md (eval_summary_page), each atomically.
void write_eval_report(const std::string& out_dir, const EvalOptions& options,
                       const std::vector<EvalRecord>& records, const std::string& header_json);

/// summary.md of one run (Markdown): how the cells read, then per task its
/// protocol, the summary table, the paired tests and the settings the ratio
/// search chose. `header_json` is results.json without its records: its
/// date, tool version, seconds and threads are printed when present. A pure
/// function of its arguments, so `spindlekv report` rewrites a committed page
/// byte for byte from its results.json.
std::string eval_summary_page(const EvalOptions& options, const std::vector<EvalRecord>& records,
                              const std::string& header_json);

/// How a task's prompts reach the cache, one sentence (Markdown): what is
/// compressed, what is then decoded or scored through the compressed cache.
std::string task_protocol(const std::string& task);

/// Whether a lower value of `metric` is better (bits_per_byte, kl_mean,
/// relative errors) rather than a higher one (accuracies, match scores).
bool lower_is_better(const std::string& metric);

/// "Which method at which memory" (Markdown): a row per ratio some record of
/// `task`/`metric` was searched to or, for a fixed-ratio codec, measured at
/// (one per printed label, "%.3g"). In each row, each method's best record
/// that fits (its measured ratio at most the row's, or searched to a target
/// at most the row's and landed within `tolerance` of it); the best method
/// (ties: fewer bytes) with its interval and ratio, the runner-up method, the
/// paired p-value between the two (exact McNemar on outcomes, exact sign
/// test on per-context values; "-" where unpaired), and the full cache's.
std::string which_method_table(const std::vector<EvalRecord>& records, const std::string& task,
                               const std::string& metric, double tolerance);

/// `value` printed with a printf `format` for one double ("%.3f").
std::string format_number(const char* format, double value);

/// The methods of `records`, in order of first appearance.
std::vector<std::string> eval_methods_of(const std::vector<EvalRecord>& records);

/// The (task, metric) pairs of `records`, in order of first appearance.
std::vector<std::pair<std::string, std::string>> eval_task_metrics(
    const std::vector<EvalRecord>& records);

/// The summary table of one task and metric, methods x target ratios
/// (Markdown): score, its 95% interval where it is an accuracy, and the
/// measured (charged) memory ratio.
std::string summary_table(const std::vector<EvalRecord>& records, const std::string& task,
                          const std::string& metric);

/// RULER (Markdown), one table per protocol: a row per method and target
/// ratio (measured ratio in parentheses), the mean string_match_all of each
/// task and length as columns, the average over them last. Empty without
/// RULER records.
std::string ruler_table(const std::vector<EvalRecord>& records);

/// For an accuracy: per target ratio, the best baseline (no codebook, not the
/// full cache) and each SpindleKV variant against it, with the paired exact
/// McNemar p-value over the same prompts (Markdown); empty when the records
/// carry no per-prompt outcomes.
std::string paired_comparison(const std::vector<EvalRecord>& records, const std::string& task,
                              const std::string& metric);

/// What each method x ratio got from the ratio search over the task's
/// prompts: reserve and thresholds (mean [min, max]), kept fraction per
/// layer, the ratio with and without the shared codebook charged, the number
/// N of concurrent requests at which the shared part falls under 1% of a
/// request's dense bytes, and the ratio at that N.
std::string settings_table(const std::vector<EvalRecord>& records, const std::string& task,
                           const std::string& metric);

}  // namespace spindlekv
