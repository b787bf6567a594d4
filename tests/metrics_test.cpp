#include "eval/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

namespace spindlekv {
namespace {

TEST(Metrics, NormalisationDropsCasePunctuationAndArticles) {
  EXPECT_EQ(normalize_answer("The  Cat, sat on a MAT!"), "cat sat on mat");
  EXPECT_EQ(exact_match("the Paris.", "paris"), 1.0);
  EXPECT_EQ(exact_match("Paris, France", "paris"), 0.0);
}

TEST(Metrics, ContainsAnswerMatchesWholeNormalisedTokens) {
  EXPECT_EQ(contains_answer("71432. Remember it", "71432"), 1.0);  // exact match would say 0
  EXPECT_EQ(exact_match("71432. Remember it", "71432"), 0.0);
  EXPECT_EQ(contains_answer("The answer is Paris, France", "paris france"), 1.0);
  EXPECT_EQ(contains_answer("714320", "71432"), 0.0);  // not a whole token
  EXPECT_EQ(contains_answer("anything", ""), 0.0);
}

TEST(Metrics, TokenF1CountsSharedTokensOnce) {
  // prediction: cat sat mat (3), reference: cat sat on mat mat (5): common 3.
  const double p = 3.0 / 3, r = 3.0 / 5;
  EXPECT_NEAR(token_f1("the cat sat mat", "cat sat on the mat mat"), 2 * p * r / (p + r), 1e-12);
  EXPECT_EQ(token_f1("dog", "cat"), 0.0);
  EXPECT_EQ(token_f1("", "cat"), 0.0);
  EXPECT_NEAR(token_f1("cat cat", "cat"), 2 * 0.5 * 1 / 1.5, 1e-12);  // repeats count once
}

TEST(Metrics, RougeLUsesTheLongestCommonSubsequence) {
  // LCS of "a b c d e" (articles removed: b c d e) and "b x d e" is b d e (3).
  const double p = 3.0 / 4, r = 3.0 / 4;
  EXPECT_NEAR(rouge_l("a b c d e", "b x d e"), 2 * p * r / (p + r), 1e-12);
  EXPECT_NEAR(rouge_l("one two three", "three two one"), 2 * (1.0 / 3) * (1.0 / 3) / (2.0 / 3),
              1e-12);
  EXPECT_EQ(rouge_l("x", "y"), 0.0);
}

TEST(Metrics, BestOverAnswersTakesTheMaximum) {
  EXPECT_EQ(best_over_answers(exact_match, "42", {"41", "42"}), 1.0);
  EXPECT_EQ(best_over_answers(exact_match, "42", {}), 0.0);
}

TEST(Metrics, BitsPerByteConvertsNats) {
  // 8 bytes each predicted with p = 1/2: 1 bit per byte.
  EXPECT_NEAR(bits_per_byte(8 * std::log(2.0), 8), 1.0, 1e-12);
  EXPECT_SKV_ERROR(bits_per_byte(1.0, 0), "empty");
}

}  // namespace
}  // namespace spindlekv
