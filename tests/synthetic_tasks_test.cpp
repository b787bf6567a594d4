#include "model/synthetic_tasks.h"

#include <gtest/gtest.h>

#include "model/tokenizer.h"
#include "test_util.h"

namespace spindlekv {
namespace {

std::string filler_text() {
  std::string s;
  for (int i = 0; i < 200; ++i) s += "and it came to pass that the days were long ";
  return s;
}

TEST(SyntheticTasks, PasskeySampleHasExactLengthAndHidesTheAnswer) {
  FillerText filler(filler_text());
  std::mt19937_64 rng(1);
  for (double depth : {0.0, 0.5, 1.0}) {
    RetrievalSample s = make_passkey_sample(filler, rng, 300, depth);
    EXPECT_EQ(s.prompt.size(), 300u);
    EXPECT_EQ(s.answer.size(), 5u);
    const size_t at = s.prompt.find("The pass key is " + s.answer);
    ASSERT_NE(at, std::string::npos);
    EXPECT_NEAR(static_cast<double>(at) / 300.0, depth * 0.7, 0.2);
    EXPECT_EQ(s.prompt.substr(s.prompt.size() - 16), "The pass key is ");
  }
}

TEST(SyntheticTasks, MultikeySampleAsksForOneOfSeveralDistinctKeys) {
  FillerText filler(filler_text());
  std::mt19937_64 rng(2);
  RetrievalTaskParameters p;
  p.multikey_pairs = 4;
  RetrievalSample s = make_multikey_sample(filler, rng, 400, 0.3, p);
  EXPECT_EQ(s.prompt.size(), 400u);
  size_t facts = 0;
  for (size_t at = s.prompt.find("The value of key "); at != std::string::npos;
       at = s.prompt.find("The value of key ", at + 1)) {
    ++facts;
  }
  EXPECT_EQ(facts, 5u);  // four facts and the question's answer stem
  const std::string key = s.prompt.substr(s.prompt.rfind("The value of key ") + 17, 4);
  EXPECT_NE(s.prompt.find("The value of key " + key + " is " + s.answer + "."), std::string::npos);
}

TEST(SyntheticTasks, SameSeedGivesSameSamples) {
  FillerText filler(filler_text());
  std::mt19937_64 a(9), b(9);
  EXPECT_EQ(make_passkey_sample(filler, a, 200, 0.5).prompt,
            make_passkey_sample(filler, b, 200, 0.5).prompt);
}

TEST(SyntheticTasks, TooShortSampleIsRefused) {
  FillerText filler(filler_text());
  std::mt19937_64 rng(3);
  EXPECT_SKV_ERROR(make_passkey_sample(filler, rng, 40, 0.5), "too short");
}

TEST(SyntheticTasks, FitToTokensTakesTheLongestPromptThatFits) {
  const FillerText filler(filler_text());
  auto tok = make_byte_tokenizer(256, 257);  // a token per byte: the fit is exact
  auto make = [&](std::mt19937_64& r, size_t bytes) {
    return make_passkey_sample(filler, r, bytes, 0.5);
  };
  std::mt19937_64 a(11), b(11);
  const RetrievalSample s = fit_to_tokens(make, *tok, 200, passkey_min_bytes(), a);
  EXPECT_EQ(1 + s.prompt.size() + s.answer.size(), 200u);  // BOS + prompt + answer
  // Deterministic: the same generator state gives the same sample and end state.
  const RetrievalSample t = fit_to_tokens(make, *tok, 200, passkey_min_bytes(), b);
  EXPECT_EQ(s.prompt, t.prompt);
  EXPECT_EQ(a(), b());
  EXPECT_SKV_ERROR(fit_to_tokens(make, *tok, 40, passkey_min_bytes(), a),
                   "even the shortest retrieval sample");
}

}  // namespace
}  // namespace spindlekv
