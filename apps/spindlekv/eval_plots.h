// `spindlekv eval`'s plots, from its records: quality against measured memory
// ratio per task (with 95% intervals), and pass-key heatmaps of depth x
// length per method at the smallest ratio. Each plot is a gnuplot script and
// its data in OUT/plots/, naming only files beside it; the PNGs are made when
// gnuplot is on PATH.
#pragma once

#include <string>
#include <vector>

#include "eval/compression_eval.h"

namespace spindlekv::cli {

/// Writes the scripts and data (atomically) and runs gnuplot in `plots_dir`
/// when it is there; returns the PNGs made.
std::vector<std::string> write_eval_plots(const std::string& plots_dir,
                                          const std::vector<EvalRecord>& records);

}  // namespace spindlekv::cli
