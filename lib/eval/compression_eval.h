// `spindlekv eval`: every method on the same inputs, at the same measured
// memory ratio. For each method and target ratio, the method's knobs are
// searched on each prompt's own prefill until its measured memory ratio
// (bytes held / dense bytes, the runtime's exact accounting) lands within a
// tolerance of the target: the reserve ratio first, then, for codebook methods whose cache
// at reserve 1 is already smaller than the target, the thresholds towards 1.
// Then the tasks run with that setting:
//   ppl       bits per byte of a held-out continuation after the context was
//             compressed (teacher-forced through the compressed cache)
//   passkey   pass-key accuracy over lengths x depths, greedy decoding from
//             the compressed cache (byte-level models)
//   jsonl:F   LongBench-format JSONL (context, input, answers): prompt =
//             context + input, greedy answer up to the first newline, scored
//             by exact match, token F1 and ROUGE-L (best over answers)
//   fidelity  per layer, relative error of attention outputs over the
//             compressed cache against the full cache, same queries
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace spindlekv {

struct EvalOptions {
  std::string model_dir;
  std::string artifact;  ///< needed by spindle and spindle-hybrid
  std::string out_dir;
  std::vector<std::string> methods = {"full",        "streaming", "h2o",
                                      "snapkv",      "pyramidkv", "pyramidinfer",
                                      "spindle-jit", "spindle",   "spindle-hybrid"};
  std::vector<double> ratios = {0.1, 0.15, 0.2, 0.3, 0.4};
  std::vector<std::string> tasks = {"ppl", "passkey", "fidelity"};
  std::string text = "calibration/heldout.txt";  ///< held-out text and pass-key filler
  int64_t ppl_samples = 8;                       ///< contexts, evenly spaced through the text
  int64_t ppl_context = 768;                     ///< tokens compressed (BOS included)
  int64_t ppl_continuation = 128;                ///< tokens scored after the context
  std::vector<int64_t> passkey_lengths = {256, 512, 1024};
  std::vector<double> passkey_depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t passkey_trials = 4;     ///< per length x depth
  int64_t jsonl_max_new = 16;     ///< answer tokens generated
  int64_t jsonl_limit = 0;        ///< samples read per file (0: all)
  int64_t window = 32;            ///< observation window l_w of every method
  double ratio_tolerance = 0.01;  ///< |measured - target| allowed (absolute)
  uint64_t seed = 7;
};

struct EvalRecord {
  std::string method, task, metric;
  double value = 0;
  double target_ratio = 1;    ///< asked for
  double measured_ratio = 1;  ///< bytes held / dense bytes over the task's prefills
  double paper_ratio = 1;     ///< the paper's formula, same prefills
  bool ratio_matched = true;  ///< |measured_ratio - target| <= tolerance
  /// The setting found on the first held-out context (every prompt of every
  /// task gets its own, searched on its own prefill).
  double reserve_ratio = 1, key_threshold = 0, value_threshold = 0;
  double compression_ms = 0;            ///< mean time to compress one prefill (all layers)
  double decode_tokens_per_second = 0;  ///< greedy decoding over the compressed cache
  std::string detail_json = "{}";       ///< per-task detail (pass-key cells, per-layer errors)
};

struct EvalProgress {
  std::string method, task;
  double target_ratio = 0;
  int64_t done = 0, total = 0;  ///< (method, ratio) pairs
};

/// Runs every method x ratio x task; deterministic for a fixed seed.
std::vector<EvalRecord> run_eval(const EvalOptions& options,
                                 const std::function<void(const EvalProgress&)>& progress = {});

}  // namespace spindlekv
