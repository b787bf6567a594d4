// The training mixture of a tokenised reference model (data/reference-model-v2):
// plain windows of a tokenised corpus, and the retrieval tasks the toolkit
// evaluates (pass-key, multi-key, RULER's), each sample fitted to the
// sequence length with its answer marked for the loss. Lives beside the task
// generators it draws on, so that a model is taught exactly the formats that
// eval and model-report measure (with other random keys, values and text).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/lm_trainer.h"

namespace spindlekv {

class Tokenizer;

/// One entry of the mixture: a task and its share of the sequences.
struct MixEntry {
  /// "passkey", "multikey" (synthetic_tasks.h), a RULER task (ruler_tasks.h),
  /// or "repeat": a corpus span of 8 to half the sequence, a blank line and
  /// the span again, the second copy weighted as the answer (induction, the
  /// copying every retrieval task rests on, without any task's format).
  std::string task;
  double fraction = 0;
};

/// Parses "task:fraction" items (e.g. "niah_multikey:0.3"). Throws naming
/// the item when a task is unknown, a fraction is not in [0, 1] or the
/// fractions sum to more than 1; the rest of the sequences is plain text.
std::vector<MixEntry> parse_training_mix(const std::vector<std::string>& items);

struct TrainingMixParameters {
  std::vector<MixEntry> mix;
  /// Share of RULER NIAH samples whose haystack is the corpus text rather
  /// than RULER's noise sentences.
  double text_haystack_fraction = 0.5;
  RetrievalTaskParameters tasks;                    ///< pass-key / multi-key digits and facts
  uint64_t seed = 1234;                             ///< RULER samples: seed of the generator
  std::string word_list = "/usr/share/dict/words";  ///< RULER keys and words
  /// Shortest sequence the source will be asked for: every task is drawn
  /// once at this length when the source is built, so a task that cannot fit
  /// is refused then, naming it (0: no check).
  int64_t min_length = 0;
};

/// The sample source of the mixture. `text` is the training corpus (also the
/// filler of pass-key samples and the text haystack); `tokenizer` must
/// outlive the source. A task sample shorter than the sequence is followed
/// by a blank line and corpus tokens, so no position is wasted.
SampleSource training_mix_samples(const std::string& text, const Tokenizer& tokenizer,
                                  const TrainingMixParameters& params);

}  // namespace spindlekv
