// `spindlekv eval`: every method on the same inputs, at the same measured
// memory ratio. For each method and target ratio, the method's knobs are
// searched on each prompt's own prefill until its measured memory ratio
// (bytes held / dense bytes, the runtime's exact accounting) lands within a
// tolerance of the target: the reserve ratio first, then, for codebook methods whose cache
// at reserve 1 is already smaller than the target, the thresholds towards 1.
// The memory ratio charges every shared table a method needs whole (calibrated
// codebooks, the token table, codec tables), divided by `shared_requests`
// concurrent requests, so no table is free.
// Then the tasks run with that setting:
//   ppl       bits per byte of a held-out continuation after the context was
//             compressed (teacher-forced through the compressed cache)
//   kl        KL(full || method) of next-token distributions over the same
//             continuation (llama.cpp's --kl-divergence), nats per token: mean
//             over contexts with a bootstrap interval; p99 over tokens and
//             each context's mean in the record's detail
//   passkey   pass-key accuracy over lengths x depths, greedy decoding from
//             the compressed cache (byte-level models)
//   jsonl:F   LongBench-format JSONL (context, input, answers): prompt =
//             context + input, greedy answer up to the first newline, scored
//             by containment (a normalised answer inside the normalised
//             generation, as RULER scores), exact match, token F1 and ROUGE-L
//             (best over answers)
//   fidelity  per layer, relative error of attention outputs over the
//             compressed cache against the full cache, same queries
//   ruler:T   RULER's synthetic tasks (eval/ruler_tasks.h; "ruler:all", or
//             "ruler:niah_single,vt,..."), generated for the model's tokenizer
//             at each of ruler_lengths, greedy answers scored by
//             string_match_all, in one or both protocols: question-aware (the
//             question is compressed with the context) and question-agnostic
//             (the context is compressed first, then the question is decoded
//             through the compressed cache)
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/eval_methods.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {

struct EvalOptions {
  std::string model_dir;
  std::string artifact;  ///< needed by spindle and spindle-hybrid
  std::string out_dir;
  std::vector<std::string> methods = known_methods();
  std::vector<double> ratios = {0.1, 0.15, 0.2, 0.3, 0.4};
  std::vector<std::string> tasks = {"ppl", "passkey", "fidelity"};
  std::string text = "calibration/heldout.txt";  ///< held-out text and pass-key filler
  int64_t ppl_samples = 8;                       ///< contexts, evenly spaced through the text
  int64_t ppl_context = 768;                     ///< tokens compressed (BOS included)
  int64_t ppl_continuation = 128;                ///< tokens scored after the context
  std::vector<int64_t> passkey_lengths = {256, 512, 1024};
  std::vector<double> passkey_depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t passkey_trials = 4;       ///< per length x depth
  int64_t jsonl_max_new = 16;       ///< answer tokens generated
  int64_t jsonl_limit = 0;          ///< samples read per file (0: all)
  int64_t window = paper::kWindow;  ///< observation window l_w of every method
  double ratio_tolerance = 0.01;    ///< |measured - target| allowed (absolute)
  /// Concurrent requests that share the shared tables (calibrated codebooks,
  /// the token table, codec tables); each is charged the whole tables / N.
  int64_t shared_requests = 1;
  /// What every method's cache holds vectors in, and the dense cache the
  /// ratio divides by ("float32", "float16", "bfloat16").
  std::string kv_dtype = "float16";
  /// The model's weights and compute ("float32", "bfloat16", "float16");
  /// norms and softmax accumulate in float32 whatever it is.
  std::string model_dtype = "float32";
  /// Where the model and every method's cache run ("cpu", "cuda", "cuda:N").
  std::string device = "cpu";
  /// RULER sample lengths in tokens (BOS and answer included); empty: the
  /// model's context up to 4096 (1024 for the bundled reference model).
  std::vector<int64_t> ruler_lengths;
  int64_t ruler_samples = 10;  ///< per task and length
  /// "question-aware", "question-agnostic" or "both".
  std::string ruler_protocol = "question-aware";
  std::string ruler_words = "/usr/share/dict/words";  ///< keys and common words
  std::string ruler_haystack;  ///< NIAH haystack text file; empty: RULER's noise sentences
  uint64_t seed = 7;
};

/// The RULER tasks named in `tasks` ("ruler:all", "ruler:T" and the bare task
/// names that follow one, as a comma list splits them), in order.
std::vector<std::string> ruler_tasks_of(const std::vector<std::string>& tasks);

/// Every option as a JSON object: what results.json records. The one
/// definition of the options' serialised form.
std::string eval_options_json(const EvalOptions& options);

/// The options eval_options_json wrote. A key it lacks keeps its default
/// (results of older builds predate some options); an unknown key or a value
/// of the wrong type throws kInvalidInput naming the key.
EvalOptions eval_options_from_json(const std::string& json);

/// mean, min and max over the prompts of a record (NaN when never set).
struct RangeStat {
  double mean = std::nan(""), min = std::nan(""), max = std::nan("");
  int64_t n = 0;
  void add(double v);
};

/// What the method's caches cost, means over the prompts (MemoryReport).
struct EvalMemory {
  double held_bytes = 0;  ///< per-request bytes
  /// Every shared table, whole: calibrated entries, token tables, codec tables.
  double shared_bytes_total = 0;
  /// What each request was charged for them: shared_bytes_total / shared_requests.
  double shared_bytes_charged = 0;
  double full_bytes = 0;  ///< the dense cache
  double ratio = 0;       ///< (held + charged) / full: what the matching uses
  /// The ratio with the tables charged in full to one request, and shared by
  /// 16 (one serving GPU's batch), whatever shared_requests is.
  double ratio_n1 = 0, ratio_n16 = 0;
  double ratio_excluding_shared = 0;  ///< held / full
  std::string kv_dtype = "float32";   ///< dtype of the dense cache in the denominator
  int64_t shared_requests = 1;
};

/// The knob settings the ratio search gave each prompt, and what they kept.
struct EvalSettings {
  RangeStat reserve_ratio, key_threshold, value_threshold;
  std::vector<double> kept_fraction;  ///< per layer: (query head, token) pairs kept / all, mean
};

struct EvalRecord {
  std::string method, task, metric;
  double value = 0;
  double target_ratio = 1;    ///< asked for
  double measured_ratio = 1;  ///< memory.ratio: charged bytes / dense bytes over the prompts
  /// Each prompt's measured ratio (at memory.shared_requests), in prompt order.
  std::vector<double> prompt_ratios;
  double paper_ratio = 1;     ///< the paper's formula, same prefills
  bool ratio_matched = true;  ///< |measured_ratio - target| <= tolerance
  /// A pure quantiser (MethodSpec::fixed_ratio): no knob to reach a target,
  /// so target_ratio is its measured ratio.
  bool fixed_ratio = false;
  int64_t n = 0;  ///< prompts scored
  /// For accuracies: the 95% Wilson interval, and each prompt's 0/1 outcome in
  /// a fixed order (the same prompts for every method), for paired tests.
  double ci_low = std::nan(""), ci_high = std::nan("");
  std::vector<int> outcomes;
  EvalMemory memory;
  EvalSettings settings;
  double compression_ms = 0;            ///< mean time to compress one prefill (all layers)
  double decode_tokens_per_second = 0;  ///< greedy decoding over the compressed cache
  std::string detail_json = "{}";       ///< per-task detail (pass-key cells, per-layer errors)
};

struct EvalProgress {
  std::string method, task;
  double target_ratio = 0;
  int64_t done = 0, total = 0;  ///< (method, ratio) pairs
};

/// Where run_eval keeps its finished settings so that an interrupted run
/// continues (eval/eval_records_file.h).
struct EvalContinuation {
  /// Partial-results file, rewritten atomically after each finished (method,
  /// ratio) setting; empty: none is kept.
  std::string partial_path;
  /// Read `partial_path` first (when it exists) and take the settings it
  /// holds instead of running them again; its signature (every option but
  /// methods, ratios and the output directory, the model's fingerprint, the
  /// artifact's checksum) must equal this run's.
  bool resume = false;
};

/// Runs every method x ratio x task; deterministic for a fixed seed, and
/// each setting independent of the others (the generator is reseeded per
/// setting), so a continued run gives the records of an uninterrupted one.
std::vector<EvalRecord> run_eval(const EvalOptions& options,
                                 const std::function<void(const EvalProgress&)>& progress = {},
                                 const EvalContinuation& continuation = {});

}  // namespace spindlekv
