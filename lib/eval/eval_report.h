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
/// and summary.md, each atomically.
void write_eval_report(const std::string& out_dir, const EvalOptions& options,
                       const std::vector<EvalRecord>& records, const std::string& header_json);

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
