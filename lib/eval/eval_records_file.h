// The serialised form of `spindlekv eval`'s records (one definition, used by
// results.json and by the partial-results file), and the partial-results
// file itself: after each finished (method, ratio) setting, run_eval writes
// every record so far, atomically, so that an interrupted evaluation
// continues where it stopped instead of starting again.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/compression_eval.h"

namespace spindlekv {

/// One record as results.json holds it; eval_record_from_json reads it back
/// unchanged (NaN intervals are stored as null).
nlohmann::ordered_json eval_record_to_json(const EvalRecord& record);
/// Throws kInvalidInput naming the missing or mistyped key.
EvalRecord eval_record_from_json(const nlohmann::json& json);

/// A finished run's results.json: its options, its records, and the rest of
/// its header (tool version, date, seconds, threads) as JSON.
struct EvalResultsFile {
  EvalOptions options;
  std::vector<EvalRecord> records;
  nlohmann::json header;  ///< every key but "records"
};

/// Reads a results.json that `spindlekv eval` wrote; throws kInvalidInput
/// naming the file and the missing or mistyped key.
EvalResultsFile read_eval_results(const std::string& path);

/// The records of one finished (method, target ratio) setting; `target` is
/// the ratio asked for (1 for a method with a fixed ratio).
struct EvalSettingRecords {
  std::string method;
  double target = 1;
  std::vector<EvalRecord> records;
};

/// What a partial-results file holds: the signature of the run that wrote it
/// (the options that decide a setting's records, the model's fingerprint and
/// the artifact's checksum) and its finished settings.
struct EvalPartialResults {
  nlohmann::json signature;
  std::vector<EvalSettingRecords> settings;
};

/// The signature of a run with `options`: every option except methods,
/// ratios and the output directory (a resumed run may add methods or
/// ratios), its input files by content hash instead of path (held-out text,
/// JSONL tasks, RULER's word list and haystack), plus `model_fingerprint`
/// and `artifact_checksum` ("" without an artifact). Throws naming a file
/// that cannot be read.
nlohmann::json eval_run_signature(const EvalOptions& options, const std::string& model_fingerprint,
                                  const std::string& artifact_checksum);

/// Writes `partial` to `path` atomically.
void write_eval_partial(const std::string& path, const EvalPartialResults& partial);

/// Reads `path`; throws naming the file when it is not a partial-results file
/// and, when its signature differs from `signature`, naming the first
/// differing key and both values.
EvalPartialResults read_eval_partial(const std::string& path, const nlohmann::json& signature);

}  // namespace spindlekv
