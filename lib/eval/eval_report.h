// `spindlekv eval` outputs in one directory: results.json (one record per
// method, ratio and task, with the measured memory ratio), results.csv,
// summary.md (a table per task), and plots/ (gnuplot scripts, their data and
// PNGs: quality against measured memory ratio per task, pass-key heatmaps of
// depth x length per method).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "eval/compression_eval.h"

namespace spindlekv {

/// Writes every output (each file atomically). Runs gnuplot when it is on
/// PATH; otherwise leaves the scripts and says so. Returns the PNGs made.
std::vector<std::string> write_eval_report(const std::string& out_dir, const EvalOptions& options,
                                           const std::vector<EvalRecord>& records,
                                           const std::string& header_json);

/// The (task, metric) pairs of `records`, in order of first appearance.
std::vector<std::pair<std::string, std::string>> eval_task_metrics(
    const std::vector<EvalRecord>& records);

/// The summary table of one task and metric, methods x target ratios (Markdown).
std::string summary_table(const std::vector<EvalRecord>& records, const std::string& task,
                          const std::string& metric);

}  // namespace spindlekv
