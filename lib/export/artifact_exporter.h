// `spindlekv export`: the third stage. Joins a codebook file (stage 2) and
// the capture it was trained from (stage 1: its attention statistics) into
// one artifact with calibrated and pyramid layer budgets.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "export/budget_calibrator.h"
#include "runtime/artifact.h"

namespace spindlekv {

/// Calibrated codec plans (runtime/codec_plan.h, export/codec_planner.h):
/// measured on the model, so they need ExportOptions::model_dir.
struct CodecPlanOptions {
  /// Targets b: plan "plan<b>" stays within the bytes of "tq<b>"; empty: no plans.
  std::vector<double> bits;
  std::vector<std::string> candidates = {"tq2", "tq3", "tq4"};  ///< row codecs to choose from
  /// Calibration text (files or directories); empty: the capture's own.
  std::vector<std::string> text;
  int64_t samples = 8;        ///< calibration contexts, evenly spaced through the text
  int64_t context = 512;      ///< tokens prefilled exactly per context (BOS included)
  int64_t continuation = 64;  ///< tokens scored after each context
};

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
  CodecPlanOptions plans;
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
/// `log` receives progress lines (the codec plans take minutes).
ExportResult run_export(const ExportOptions& options,
                        const std::function<void(const std::string&)>& log = {});

}  // namespace spindlekv
