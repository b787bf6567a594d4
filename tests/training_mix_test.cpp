#include "eval/training_mix.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "model/tokenizer.h"
#include "test_util.h"

namespace spindlekv {
namespace {

// A corpus of distinct sentences, so a window can be located in it.
std::string corpus_text() {
  std::string t;
  for (int i = 0; i < 400; ++i) {
    t += "Sentence " + std::to_string(i) + " tells of the river and the hill. ";
  }
  return t;
}

std::string span(const Tokenizer& tok, const TrainingSample& s, int64_t begin, int64_t len) {
  return tok.decode(std::vector<int64_t>(s.ids.begin() + begin, s.ids.begin() + begin + len));
}

TEST(TrainingMix, ParseRejectsUnknownTasksAndBadFractions) {
  const auto mix = parse_training_mix({"passkey:0.25", "niah_multikey:0.5"});
  ASSERT_EQ(mix.size(), 2u);
  EXPECT_EQ(mix[1].task, "niah_multikey");
  EXPECT_DOUBLE_EQ(mix[1].fraction, 0.5);
  EXPECT_SKV_ERROR(parse_training_mix({"bogus:0.1"}), "unknown task 'bogus'");
  EXPECT_SKV_ERROR(parse_training_mix({"passkey"}), "not task:fraction");
  EXPECT_SKV_ERROR(parse_training_mix({"passkey:1.5"}), "fraction '1.5' is not in [0, 1]");
  EXPECT_SKV_ERROR(parse_training_mix({"passkey:x"}), "fraction 'x'");
  EXPECT_SKV_ERROR(parse_training_mix({"passkey:0.6", "vt:0.6"}), "sum to more than 1");
}

TEST(TrainingMix, PasskeySamplesFillTheLengthAndMarkTheKey) {
  auto tok = make_byte_tokenizer(256, 257);
  const std::string text = corpus_text();
  TrainingMixParameters p;
  p.mix = parse_training_mix({"passkey:1"});
  SampleSource source = training_mix_samples(text, *tok, p);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 5; ++i) {
    const TrainingSample s = source(rng, 300);
    ASSERT_EQ(s.ids.size(), 300u);
    ASSERT_GE(s.answer_begin, 0);
    ASSERT_EQ(s.answer_length, 6);  // five digits and the line break
    const std::string answer = span(*tok, s, s.answer_begin, 5);
    EXPECT_TRUE(std::regex_match(answer, std::regex("[0-9]{5}"))) << answer;
    const std::string before = span(*tok, s, 0, s.answer_begin);
    EXPECT_EQ(before.substr(before.size() - 16), "The pass key is ");
    EXPECT_NE(before.find("The pass key is " + answer + "."), std::string::npos);
    EXPECT_EQ(s.answer_begin + s.answer_length, 300);  // a token per byte: the fit is exact
  }
}

TEST(TrainingMix, RulerSamplesEndWithTheAskedNeedlesValue) {
  auto tok = make_byte_tokenizer(256, 257);
  TrainingMixParameters p;
  p.mix = parse_training_mix({"niah_multikey:1"});
  SampleSource source = training_mix_samples(corpus_text(), *tok, p);
  std::mt19937_64 rng(4);
  for (int i = 0; i < 4; ++i) {
    const TrainingSample s = source(rng, 900);
    ASSERT_EQ(s.ids.size(), 900u);
    ASSERT_GE(s.answer_begin, 0);
    const std::string before = span(*tok, s, 0, s.answer_begin);
    const std::string answer = span(*tok, s, s.answer_begin, s.answer_length);
    std::smatch m;
    ASSERT_TRUE(std::regex_match(answer, m, std::regex(" ([0-9]{7})\\.\n"))) << answer;
    std::smatch q;
    ASSERT_TRUE(
        std::regex_search(before, q, std::regex("special magic numbers for (\\w+) mentioned")))
        << before;
    // The needle of the asked key holds the answer; other keys' needles do not.
    EXPECT_NE(before.find("for " + q[1].str() + " is: " + m[1].str() + "."), std::string::npos);
    // The room left for longer answers is filled: a blank line, then corpus text.
    ASSERT_LE(s.answer_begin + s.answer_length + 2, 900);
    EXPECT_EQ(span(*tok, s, s.answer_begin + s.answer_length, 2), "\n\n");
  }
}

TEST(TrainingMix, RepeatSamplesCopyACorpusSpanAfterABlankLine) {
  auto tok = make_byte_tokenizer(256, 257);
  const std::string text = corpus_text();
  TrainingMixParameters p;
  p.mix = parse_training_mix({"repeat:1"});
  p.min_length = 100;
  SampleSource source = training_mix_samples(text, *tok, p);
  std::mt19937_64 rng(6);
  std::set<int64_t> spans;
  for (int i = 0; i < 20; ++i) {
    const TrainingSample s = source(rng, 100);
    ASSERT_EQ(s.ids.size(), 100u);
    const int64_t n = s.answer_length + 1;  // the span; its first token is not an answer
    spans.insert(n);
    ASSERT_GE(n, 8);
    ASSERT_LE(n, 49);  // (100 - 2) / 2
    ASSERT_EQ(s.answer_begin, n + 3);
    const std::string first = span(*tok, s, 0, n);
    EXPECT_NE(text.find(first), std::string::npos);
    EXPECT_EQ(span(*tok, s, n, 2), "\n\n");
    EXPECT_EQ(span(*tok, s, n + 2, n), first);
  }
  EXPECT_GT(spans.size(), 5u);  // the span's length varies
  EXPECT_SKV_ERROR(source(rng, 19), "repeat sample length 19 too short");
}

TEST(TrainingMix, EmptyMixGivesPlainCorpusWindows) {
  auto tok = make_byte_tokenizer(256, 257);
  const std::string text = corpus_text();
  SampleSource source = training_mix_samples(text, *tok, TrainingMixParameters{});
  std::mt19937_64 rng(5);
  const TrainingSample s = source(rng, 100);
  EXPECT_EQ(s.answer_begin, -1);
  ASSERT_EQ(s.ids.size(), 100u);
  EXPECT_NE(text.find(tok->decode(s.ids)), std::string::npos);
}

TEST(TrainingMix, TaskThatCannotFitTheShortestSequenceIsRefusedByName) {
  auto tok = make_byte_tokenizer(256, 257);
  TrainingMixParameters p;
  p.mix = parse_training_mix({"passkey:0.5", "niah_multikey:0.5"});
  p.min_length = 200;  // pass-key fits; RULER's multi-key needle set does not
  EXPECT_SKV_ERROR(training_mix_samples(corpus_text(), *tok, p),
                   "training mix task 'niah_multikey' at the shortest sequence, 200 tokens");
  p.min_length = 900;
  EXPECT_NO_THROW(training_mix_samples(corpus_text(), *tok, p));
}

// The v2 reference model's committed tokenizer: answers and the blank line
// after them are the tokens that continue the text, with no stray word-start
// piece.
TEST(TrainingMix, SentencePieceSamplesMarkTheAnswerTokens) {
  auto tok = load_sentencepiece_tokenizer(std::string(SPINDLEKV_SOURCE_DIR) +
                                          "/data/tokenizer-v2/tokenizer.model");
  TrainingMixParameters p;
  p.mix = parse_training_mix({"passkey:0.5", "niah_multikey:0.5"});
  p.min_length = 512;
  SampleSource source = training_mix_samples(corpus_text(), *tok, p);
  std::mt19937_64 rng(8);
  int ruler = 0;
  for (int i = 0; i < 8; ++i) {
    const TrainingSample s = source(rng, 512);
    ASSERT_EQ(s.ids.size(), 512u);
    ASSERT_GE(s.answer_begin, 0);
    const std::string answer = span(*tok, s, s.answer_begin, s.answer_length);
    const std::string before = span(*tok, s, 0, s.answer_begin);
    if (before.find("special magic numbers") != std::string::npos) {
      ++ruler;
      EXPECT_TRUE(std::regex_match(answer, std::regex("[0-9]{7}\\.\n"))) << answer;
      ASSERT_LE(s.answer_begin + s.answer_length + 2, 512);
      const std::vector<int64_t> gap(s.ids.begin() + s.answer_begin + s.answer_length,
                                     s.ids.begin() + s.answer_begin + s.answer_length + 2);
      EXPECT_EQ(tok->decode(gap), "\n\n");
    } else {
      EXPECT_TRUE(std::regex_match(answer, std::regex("[0-9]{5}\n"))) << answer;
      EXPECT_NE(before.find("The pass key is " + answer.substr(0, 5)), std::string::npos);
    }
  }
  EXPECT_GT(ruler, 0);
  EXPECT_LT(ruler, 8);
}

}  // namespace
}  // namespace spindlekv
