// RULER's synthetic long-context tasks (Hsieh et al., 2024), generated for
// any tokenizer: no downloads, deterministic in the seed. Each sample is an
// instruction and a haystack (`context`) followed by the question and the
// answer prefix (`question`), with RULER's templates; a generation scores the
// share of the expected strings it contains (string_match_all).
//
//   niah_single          one needle "One of the special magic numbers for KEY
//                        is: VALUE." (a dictionary word, a 7-digit number) in
//                        repeated noise sentences (or a given text)
//   niah_multikey        the same with 3 distractor needles of other keys
//   niah_multikey_dense  a haystack made only of distractor needles
//   niah_multivalue      4 values for one key; all must be recalled
//   niah_multiquery      4 keys asked at once
//   vt                   variable tracking: VAR X = 12345, then 4 hops
//                        VAR Y = VAR X hidden in noise; name all 5 variables
//   cwe                  common words: a numbered list in which 10 words
//                        appear 30 times and the rest 3 times; name the 10
//   fwe                  frequent words: Zipf (alpha 2) coded words with
//                        "...." as the most frequent; name ranks 2-4
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spindlekv {

class Tokenizer;

/// Every task, in RULER's order.
const std::vector<std::string>& ruler_task_names();
bool is_ruler_task(const std::string& name);

struct RulerSample {
  std::string task;
  int64_t length = 0;  ///< target: BOS + context + question + answer tokens at most this
  int64_t index = 0;
  std::string context;   ///< instruction + haystack: compressed first without the question
  std::string question;  ///< the question and RULER's answer prefix that follow it
  std::vector<std::string> answers;  ///< every one must appear in the generation
  double depth = -1;                 ///< where the (first asked) needle sits, 0..1; -1: none
  int64_t max_new_tokens = 0;        ///< RULER's tokens to generate
  int64_t tokens = 0;  ///< tokens of context + question (no BOS), the larger of joint and apart
};

struct RulerResources {
  std::vector<std::string> words;  ///< keys and the common-words list (load_word_list)
  /// Words of the NIAH haystack text (haystack_words); empty: RULER's noise sentences.
  std::vector<std::string> haystack;
};

/// The whitespace-separated words of `text`, for RulerResources::haystack;
/// throws when there are none.
std::vector<std::string> haystack_words(const std::string& text);

/// Lowercase a-z words of 3-10 letters from a word list (one per line),
/// deduplicated and sorted; throws naming the file when it cannot be read or
/// holds fewer than 1000 such words (Debian: package wamerican).
std::vector<std::string> load_word_list(const std::string& path = "/usr/share/dict/words");

/// RULER's tokens to generate for `task` (vt 30, cwe 120, fwe 50, else 128).
int64_t ruler_max_new_tokens(const std::string& task);

/// Sample `index` of `task`, its haystack grown as far as `length` tokens of
/// `tokenizer` allow: as in RULER, the tokens to generate count against the
/// length, and so does one BOS (1 + context + question + max_new_tokens <=
/// length, as close as the haystack's step permits, with context and question
/// counted both tokenised together and apart, as the two protocols feed them);
/// deterministic in (seed, task, length, index).
/// NIAH needles sit at depth (index mod 5) / 4. Throws naming the task when
/// even an empty haystack does not fit.
RulerSample make_ruler_sample(const std::string& task, const Tokenizer& tokenizer, int64_t length,
                              int64_t index, uint64_t seed, const RulerResources& resources);

/// RULER's string_match_all: the share of `answers` found in `generation`,
/// case-insensitive (1 when there are none).
double string_match_all(const std::string& generation, const std::vector<std::string>& answers);

/// Writes samples as JSONL, one object per line (task, length, index, depth,
/// tokens, max_new_tokens, input = context + question, context, question,
/// answers), atomically.
void write_ruler_jsonl(const std::string& path, const std::vector<RulerSample>& samples);

}  // namespace spindlekv
