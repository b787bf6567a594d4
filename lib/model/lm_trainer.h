// Trains a LlamaModel as a byte-level language model with LibTorch autograd:
// the recipe of the bundled reference model (data/reference-model).
//
// Each step draws a batch of byte sequences: plain windows of the corpus, and
// pass-key and multi-key retrieval samples (synthetic_tasks.h) so that the
// model learns to retrieve across its whole context. Sequences start short
// and grow to the full context (short sequences learn the language faster;
// long ones teach long-range retrieval).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "model/llama_model.h"
#include "model/synthetic_tasks.h"

namespace spindlekv {

struct LmTrainingParameters {
  int64_t steps = 4000;
  /// Stop after this many steps (0: run all `steps`); the schedules still
  /// follow `steps`, as when a longer run is cut short.
  int64_t stop_after = 0;
  /// Tokens per optimiser step; the batch is tokens_per_step / sequence length.
  int64_t tokens_per_step = 8192;
  int64_t max_seq_len = 1024;  ///< final sequence length (the trained context)
  /// Sequence length doubles from min_seq_len up to max_seq_len over the
  /// first `growth_fraction` of the steps.
  int64_t min_seq_len = 256;
  double growth_fraction = 0.5;
  double learning_rate = 3e-3;  ///< peak, after warm-up; cosine decay follows
  double min_lr_fraction = 0.1;
  int64_t warmup_steps = 100;
  double weight_decay = 0.01;
  double grad_clip = 1.0;
  double passkey_fraction = 0.25;   ///< share of sequences that are pass-key samples
  double multikey_fraction = 0.35;  ///< share that are multi-key samples
  /// Loss weight of answer bytes relative to other bytes: the answers are the
  /// only bytes that require retrieval, and a handful per sequence.
  double answer_loss_weight = 4.0;
  RetrievalTaskParameters tasks;
  uint64_t seed = 1234;
  int64_t bos_token = 256;  ///< prepended to every sequence
};

struct LmTrainingProgress {
  int64_t step = 0;
  int64_t seq_len = 0;
  double loss = 0;  ///< weighted training loss of this step (nats per token)
  double learning_rate = 0;
  double tokens_per_second = 0;
  double elapsed_seconds = 0;
};

/// Runs the recipe on `model` (its weights are updated in place). Calls
/// `on_step` after every step (for logging and checkpoints). Returns the
/// mean loss of the last 50 steps.
double train_language_model(LlamaModel& model, const FillerText& corpus,
                            const LmTrainingParameters& params,
                            const std::function<void(const LmTrainingProgress&)>& on_step);

/// Mean bits per byte of `text` under `model`, in windows of `window` bytes
/// (each prefixed by `bos_token`), scoring every byte but the first of each window.
double bits_per_byte(const LlamaModel& model, const std::string& text, int64_t window,
                     int64_t bos_token);

}  // namespace spindlekv
