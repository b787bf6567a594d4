// `spindlekv export`: the third stage. Joins a codebook file (stage 2) and
// the capture it was trained from (stage 1: its attention statistics) into
// one artifact with calibrated and pyramid layer budgets.
#pragma once

#include <string>

#include "export/budget_calibrator.h"
#include "runtime/artifact.h"

namespace spindlekv {

struct ExportOptions {
  std::string codebooks;            ///< codebook file from `spindlekv train`
  std::string capture;              ///< the capture those codebooks were trained on
  std::string out;                  ///< artifact (.safetensors)
  std::string model_dir;            ///< optional: refuse inputs made from another model
  std::string gqa_mode = "repeat";  ///< recorded default for the runtime: repeat or average
  int64_t window = 0;               ///< observation window; 0 takes the capture's
  /// Cache storage dtype the budgets are planned for: its bytes per slot and
  /// element replace those in `budgets`; recorded in the artifact.
  std::string kv_dtype = "float16";
  BudgetCalibrationParameters budgets;
  bool overwrite = false;
};

struct ExportResult {
  Artifact artifact;
  BudgetCalibration budgets;
};

/// Every option as a JSON object (the artifact's sources record it).
std::string export_options_json(const ExportOptions& options);

/// Builds and writes the artifact (atomically). Throws naming the file and
/// field when the codebooks and capture disagree (model, calibration text,
/// layers) or when the capture is unfinished or misses layers.
ExportResult run_export(const ExportOptions& options);

}  // namespace spindlekv
