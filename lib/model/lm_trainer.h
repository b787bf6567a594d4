// Trains a LlamaModel as a language model with LibTorch autograd: the recipe
// of the bundled reference models (data/reference-model, byte-level, and
// data/reference-model-v2, SentencePiece).
//
// Each step draws a batch of sequences from a SampleSource: plain windows of
// a corpus and retrieval samples whose answer tokens weigh more in the loss,
// so that the model learns to retrieve across its whole context. Sequences
// start short and grow to the full context (short sequences learn the
// language faster; long ones teach long-range retrieval).
//
// A run can be split into pieces: save_state() writes the optimiser's
// moments, the step and the data generator beside a checkpoint, and
// load_state() continues from them exactly where the run stopped.
//
// Token ids are int64 throughout; a batch is [B, T] with B = tokens_per_step / T.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "model/llama_model.h"
#include "model/synthetic_tasks.h"

namespace spindlekv {

class Tokenizer;

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
  double passkey_fraction = 0.25;   ///< byte recipe: share of pass-key samples
  double multikey_fraction = 0.35;  ///< byte recipe: share of multi-key samples
  /// Loss weight of answer tokens relative to other tokens: the answers are
  /// the only tokens that require retrieval, and a handful per sequence.
  double answer_loss_weight = 4.0;
  RetrievalTaskParameters tasks;
  uint64_t seed = 1234;
  int64_t bos_token = 256;  ///< prepended to every sequence
  /// What the samples are drawn from (corpus, tokenizer, task mixture), as
  /// the caller describes it; a resume must match it.
  std::string data_signature;
};

/// One training sequence (after BOS). Shorter than the length asked for: the
/// rest is padding that is not scored; longer: cut.
struct TrainingSample {
  std::vector<int64_t> ids;
  int64_t answer_begin = -1;  ///< index in `ids` of the first answer token; -1: none
  int64_t answer_length = 0;
};

/// Draws a sample of (at most) `length` tokens after BOS.
using SampleSource = std::function<TrainingSample(std::mt19937_64& rng, int64_t length)>;

/// The byte-level recipe of data/reference-model: windows of `corpus` and
/// pass-key / multi-key samples in params' proportions (sequences too short
/// for a task stay plain text). `corpus` must outlive the source.
SampleSource byte_recipe_samples(const FillerText& corpus, const LmTrainingParameters& params);

/// A tokenised corpus to cut windows of token ids from.
class TokenCorpus {
 public:
  /// Encodes `text` with `tokenizer` in paragraph-aligned pieces of about
  /// 64 KB (so the cost stays linear); throws when it yields fewer than 64 tokens.
  TokenCorpus(const std::string& text, const Tokenizer& tokenizer);
  /// `length` consecutive ids from a uniformly random offset.
  std::vector<int64_t> window(std::mt19937_64& rng, int64_t length) const;
  int64_t size() const { return static_cast<int64_t>(ids_.size()); }

 private:
  std::vector<int32_t> ids_;
};

struct LmTrainingProgress {
  int64_t step = 0;
  int64_t seq_len = 0;
  double loss = 0;  ///< weighted training loss of this step (nats per token)
  /// Unweighted loss over the answer tokens of retrieval samples (nats per
  /// token), and the fraction of them the model predicts (argmax): the signal
  /// that copying has begun. Both are 0 with answer_tokens 0 (text only).
  double answer_loss = 0;
  double answer_accuracy = 0;
  int64_t answer_tokens = 0;
  double learning_rate = 0;
  double tokens_per_second = 0;
  double elapsed_seconds = 0;
};

/// The training loop, resumable. The model's parameters are updated in place.
class LmTrainer {
 public:
  LmTrainer(LlamaModel& model, SampleSource samples, const LmTrainingParameters& params);
  ~LmTrainer();
  LmTrainer(const LmTrainer&) = delete;
  LmTrainer& operator=(const LmTrainer&) = delete;

  /// Runs from the current step up to stop_after (or steps), calling
  /// `on_step` after each. Returns the mean loss of the last 50 steps.
  double run(const std::function<void(const LmTrainingProgress&)>& on_step);

  /// Writes the optimiser state and the float32 weights (`optimizer.pt`) and
  /// `trainer_state.json`
  /// (step, data generator, the parameters that must match to continue) into
  /// `dir`, each through a temporary file and a rename.
  void save_state(const std::string& dir) const;
  /// Restores what save_state wrote, the model's weights included, onto the
  /// model's device. Throws naming the file and key when the state is
  /// missing, torn (its two files from different steps), or was written with
  /// other parameters: the schedule (steps, tokens per step, sequence lengths,
  /// growth, learning rate and warm-up), the optimiser's settings, the loss
  /// weighting, the tasks, the seed or the data signature. (States written
  /// before some of these keys existed are checked on the keys they have.)
  void load_state(const std::string& dir);

  int64_t step() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Mean bits per byte of `text` under a byte-level `model`, in windows of
/// `window` bytes (each prefixed by `bos_token`), scoring every byte but the
/// first of each window.
double bits_per_byte(const LlamaModel& model, const std::string& text, int64_t window,
                     int64_t bos_token);

/// Bits per byte of `text` under `model` with `tokenizer`: the text is cut
/// into windows of `window` tokens (each after BOS), every token but the
/// first of each window scored, and the nats divided by the bytes those
/// scored tokens decode to; comparable across tokenizers.
double bits_per_byte(const LlamaModel& model, const Tokenizer& tokenizer, const std::string& text,
                     int64_t window, int64_t max_windows = 64);

}  // namespace spindlekv
