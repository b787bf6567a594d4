// Sensitivity of a model to each row codec, layer by layer (the export
// stage, the only one that runs the model after capture): on calibration
// text, KL(full || coded) of next-token distributions over a teacher-forced
// continuation, when only one layer's keys or values are coded with one
// candidate codec and everything else is exact. codec_planner.h turns the
// table into byte plans.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/llama_model.h"
#include "runtime/artifact.h"
#include "runtime/codec_plan.h"
#include "runtime/storage_cost.h"

namespace spindlekv {

struct CodecSensitivityOptions {
  /// Row codecs measured (no artifact codecs); every plan picks among them.
  std::vector<std::string> candidates = {"tq2", "tq3", "tq4"};
  /// Calibration sequences of context + continuation tokens each (BOS
  /// included): the first `context` are prefilled exactly, the rest
  /// teacher-forced through the coded cache and scored.
  std::vector<std::vector<int64_t>> sequences;
  int64_t context = 512;
  StorageDtype dtype = StorageDtype::kFloat16;  ///< the cache's storage dtype
};

/// Measures the table for `model` (any device). `artifact` supplies the
/// geometry-checked base the probes bind against (its plans are ignored).
/// `progress(done, total)` is called after each (context, layer). Throws
/// kInvalidInput when a sequence is no longer than the context or the
/// model's, or a candidate is unknown or needs an artifact.
CodecSensitivity measure_codec_sensitivity(
    const LlamaModel& model, const Artifact& artifact, const CodecSensitivityOptions& options,
    const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace spindlekv
