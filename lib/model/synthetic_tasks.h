// Synthetic long-range retrieval tasks on byte-level text, used to train the
// reference model and to evaluate compressed caches: a single pass key hidden
// in filler text, and multi-key lookups (several "key: value" facts spread
// through the text, one asked for at the end). A task that every method
// passes cannot tell methods apart, so the multi-key variant is harder:
// several similar facts compete and only one is right.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace spindlekv {

class Tokenizer;

/// One retrieval sample. `prompt + answer` is the full text a model sees in
/// training; in evaluation it is given `prompt` and must produce `answer`.
struct RetrievalSample {
  std::string prompt;
  std::string answer;
  double depth = 0;  ///< where the (asked) fact sits in the filler, 0 = start, 1 = end
};

/// A corpus of plain text to cut filler windows from.
class FillerText {
 public:
  /// `text` must be at least 2 bytes longer than any window asked for.
  explicit FillerText(std::string text);
  /// A window of `length` bytes starting at a uniformly random offset,
  /// shifted to begin after a space so words are not cut at the start.
  std::string window(std::mt19937_64& rng, size_t length) const;
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

struct RetrievalTaskParameters {
  int64_t digits = 5;          ///< length of pass keys and values
  int64_t multikey_pairs = 4;  ///< facts per multi-key sample
};

/// Smallest prompt length (bytes) a pass-key / multi-key sample can have.
size_t passkey_min_bytes(const RetrievalTaskParameters& params = {});
size_t multikey_min_bytes(const RetrievalTaskParameters& params = {});

/// Pass key hidden at `depth` (0..1) of a sample whose prompt is about
/// `total_bytes` long.
RetrievalSample make_passkey_sample(const FillerText& filler, std::mt19937_64& rng,
                                    size_t total_bytes, double depth,
                                    const RetrievalTaskParameters& params = {});

/// Several "key: value" facts spread through filler; the asked one sits at
/// `depth`, the others at random depths.
RetrievalSample make_multikey_sample(const FillerText& filler, std::mt19937_64& rng,
                                     size_t total_bytes, double depth,
                                     const RetrievalTaskParameters& params = {});

/// Builds a sample with `make(rng, prompt_bytes)` whose BOS + prompt + answer
/// take at most `length` tokens of `tokenizer`, its prompt as long as
/// bisection on the byte count finds (from `min_bytes`). Every attempt starts
/// from the same generator state, so the result is deterministic; `rng` ends
/// as after the chosen attempt. Throws when even `min_bytes` does not fit.
RetrievalSample fit_to_tokens(const std::function<RetrievalSample(std::mt19937_64&, size_t)>& make,
                              const Tokenizer& tokenizer, int64_t length, size_t min_bytes,
                              std::mt19937_64& rng);

}  // namespace spindlekv
