// Scores of generated text and of predictions, as LongBench computes them
// for English question answering (normalised exact match and token F1) plus
// ROUGE-L, and bits per byte for held-out text.
#pragma once

#include <string>
#include <vector>

namespace spindlekv {

/// Lower case, punctuation removed, articles (a, an, the) removed,
/// whitespace collapsed: LongBench's normalize_answer.
std::string normalize_answer(const std::string& text);
/// Whitespace tokens of normalize_answer(text).
std::vector<std::string> answer_tokens(const std::string& text);

/// 1 when the normalised texts are equal, else 0.
double exact_match(const std::string& prediction, const std::string& reference);
/// 1 when the normalised reference occurs in the normalised prediction as
/// whole tokens ("71432 remember it" contains "71432"), else 0; RULER's
/// string match. An empty reference is never contained.
double contains_answer(const std::string& prediction, const std::string& reference);
/// Token-level F1 of the normalised texts (0 when either is empty).
double token_f1(const std::string& prediction, const std::string& reference);
/// ROUGE-L F1: longest common subsequence of normalised tokens.
double rouge_l(const std::string& prediction, const std::string& reference);
/// The best of a score over several reference answers.
double best_over_answers(double (*score)(const std::string&, const std::string&),
                         const std::string& prediction, const std::vector<std::string>& answers);

/// Bits per byte of text given the natural-log likelihood of its tokens.
double bits_per_byte(double total_nats, size_t bytes);

}  // namespace spindlekv
