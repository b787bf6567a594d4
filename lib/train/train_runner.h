// `spindlekv train`: learns per-layer key and value codebooks from a capture.
//
// Captured vectors are split by sequence into training and held-out sets
// (every `heldout_every`-th sequence is held out), sampled so that memory is
// bounded by the sample sizes whatever the capture's size, and read from the
// HDF5 file in blocks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/paper_defaults.h"
#include "train/codebook_file.h"
#include "train/codebook_trainer.h"

namespace spindlekv {

struct TrainOptions {
  std::string capture;               ///< input capture file
  std::string out;                   ///< output codebook file
  std::string layers = "all";        ///< "all", "0-7", "0,3"
  std::string model_dir;             ///< optional: refuse a capture of another model
  std::string sharing = "per-head";  ///< "per-head" or "shared" across a layer's KV heads
  double key_threshold = paper::kKeyThreshold;
  double value_threshold = paper::kValueThreshold;
  int64_t max_codewords = 1024;
  /// Smallest size whose held-out coverage reaches this (0: keep max size).
  double target_coverage = 0.0;
  int64_t sample_size = 50000;         ///< training vectors per codebook
  int64_t heldout_size = 20000;        ///< held-out vectors per codebook
  int64_t heldout_every = 10;          ///< every n-th captured sequence is held out
  CodebookTrainingParameters trainer;  ///< threshold and max_codewords are set from above
  bool overwrite = false;
};

struct TrainProgress {
  int64_t layer = 0;
  int64_t done = 0;  ///< codebooks trained
  int64_t total = 0;
  double seconds = 0;
};

/// Every option as a JSON object: the codebook file's recorded config. The
/// one definition of the options' serialised form.
std::string train_options_json(const TrainOptions& options);

/// Runs the training and writes `out` atomically. Returns what was written.
CodebookFile run_train(const TrainOptions& options,
                       const std::function<void(const TrainProgress&)>& on_progress = {});

/// Sizes at which coverage curves are read: 1, 2, 4, ... up to and including `max`.
std::vector<int64_t> curve_sizes_up_to(int64_t max);

}  // namespace spindlekv
