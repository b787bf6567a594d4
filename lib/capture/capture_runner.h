// `spindlekv capture`: runs a model over calibration text and streams
// pre-RoPE keys, values and attention statistics into a capture file.
//
// Crash consistency: the capture is written to "<out>.partial" and flushed
// after every `flush_every` sequences; only a finished capture is renamed to
// <out>. An interrupted run leaves <out> untouched (absent, or the previous
// one) and a partial file holding only complete sequences, which --resume
// continues.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "capture/attention_statistics.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {

struct CaptureOptions {
  std::string model_dir;
  std::vector<std::string> text_paths;  ///< files, directories, .jsonl
  std::string out;                      ///< capture file (.h5)
  std::string layers = "all";           ///< "all", "0-7", "0,3,5"
  int64_t seq_len = 1024;               ///< tokens per sequence (BOS included)
  int64_t max_sequences = 0;            ///< 0: until the text runs out
  int64_t max_tokens = 0;               ///< 0: no cap; else stop after this many tokens
  int64_t window = paper::kWindow;      ///< observation window (last queries) for statistics
  int64_t positions_per_sequence = 0;   ///< vectors sampled per sequence and layer (0: all)
  uint64_t seed = 0;                    ///< of position sampling
  int64_t flush_every = 1;              ///< sequences between flushes (durability points)
  /// Deflate level of the key and value datasets (0: none; index columns are
  /// always deflated). Off by default: level 1 shrinks the reference model's
  /// capture by about a quarter but costs 12-30% of capture throughput
  /// (bench/capture_bench), and more next to a GPU forward pass.
  int compression_level = 0;
  bool resume = false;     ///< continue <out>.partial
  bool overwrite = false;  ///< replace <out> and any <out>.partial
  AttentionStatisticsParameters stats;
  std::string device = "cpu";
  /// The model's weights and compute: float32, bfloat16 or float16. The
  /// captured K/V are stored as float32 whatever it is.
  std::string dtype = "float32";
  /// Checked between sequences: when set, the run flushes and stops
  /// unfinished (as after Ctrl-C), leaving <out>.partial for --resume.
  const std::atomic<bool>* stop_requested = nullptr;
};

struct CaptureProgress {
  int64_t sequences = 0;  ///< complete, including resumed ones
  int64_t tokens = 0;     ///< processed in this run
  double tokens_per_second = 0;
  double fraction = 0;  ///< estimated share of the whole job done
  double eta_seconds = 0;
};

struct CaptureSummary {
  int64_t sequences = 0;
  int64_t resumed_sequences = 0;
  int64_t vectors_per_layer = 0;
  bool finished = false;  ///< false when stopped by stop_requested
  double seconds = 0;
};

/// Parses "all", "3", "0-7", "0,2,5-6" against `num_layers`; throws naming
/// the spec and the valid range.
std::vector<int64_t> parse_layer_spec(const std::string& spec, int64_t num_layers);

/// Every option (but stop_requested) as a JSON object: what the capture
/// file records. The one definition of the options' serialised form.
std::string capture_options_json(const CaptureOptions& options);

/// Runs the capture. Throws spindlekv::Error for bad input (naming the file,
/// layer or value at fault) without leaving a file that loads as finished.
CaptureSummary run_capture(const CaptureOptions& options,
                           const std::function<void(const CaptureProgress&)>& on_progress = {});

}  // namespace spindlekv
