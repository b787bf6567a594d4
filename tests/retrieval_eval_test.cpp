#include "eval/retrieval_eval.h"

#include <gtest/gtest.h>

#include <regex>

#include "model/tokenizer.h"
#include "test_util.h"

namespace spindlekv {
namespace {

std::string filler_text() {
  std::string t;
  for (int i = 0; i < 300; ++i) t += "The hills " + std::to_string(i) + " were green and wide. ";
  return t;
}

RetrievalGrid small_grid() {
  RetrievalGrid g;
  g.lengths = {128, 256};
  g.depths = {0.0, 1.0};
  g.trials_per_cell = 2;
  return g;
}

// A generator that reads the pass key from the prompt (or gives wrong
// digits), checking that every prompt leaves room for the answer.
struct KeyReader {
  const Tokenizer& tok;
  bool right;
  std::vector<int64_t> prompt_sizes;
  std::vector<int64_t> operator()(const std::vector<int64_t>& prompt, int64_t n) {
    prompt_sizes.push_back(static_cast<int64_t>(prompt.size()) + n);
    const std::string text = tok.decode(prompt);
    std::smatch m;
    EXPECT_TRUE(std::regex_search(text, m, std::regex("The pass key is ([0-9]+)\\.")));
    const std::string key = right ? m[1].str() : "00000";
    std::vector<int64_t> full = tok.encode(text + key), head = tok.encode(text);
    std::vector<int64_t> out(full.begin() + static_cast<int64_t>(head.size()), full.end());
    out.resize(static_cast<size_t>(n), out.empty() ? 0 : out.back());
    return out;
  }
};

TEST(RetrievalEval, SentencePieceSamplesFitTheLengthAndScoreTheAnswer) {
  auto tok = load_sentencepiece_tokenizer(std::string(SPINDLEKV_SOURCE_DIR) +
                                          "/data/tokenizer-v2/tokenizer.model");
  const FillerText filler(filler_text());
  KeyReader reader{*tok, true, {}};
  auto generate = [&](const std::vector<int64_t>& p, int64_t n) { return reader(p, n); };
  const RetrievalResult r =
      evaluate_retrieval(RetrievalTask::kPasskey, filler, small_grid(), 1, generate, tok.get());
  EXPECT_EQ(r.trials(), 8);
  EXPECT_DOUBLE_EQ(r.accuracy(), 1.0);
  // BOS + prompt + answer fill each cell's length, as closely as a word allows.
  ASSERT_EQ(reader.prompt_sizes.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    const int64_t length = i < 4 ? 128 : 256;
    EXPECT_LE(reader.prompt_sizes[i], length);
    EXPECT_GE(reader.prompt_sizes[i], length - 4);
  }
  KeyReader wrong{*tok, false, {}};
  auto generate_wrong = [&](const std::vector<int64_t>& p, int64_t n) { return wrong(p, n); };
  EXPECT_DOUBLE_EQ(evaluate_retrieval(RetrievalTask::kPasskey, filler, small_grid(), 1,
                                      generate_wrong, tok.get())
                       .accuracy(),
                   0.0);
}

TEST(RetrievalEval, LongFitStopsAtTheFillerTextInsteadOfThrowing) {
  // 30,000 tokens would need more filler than the text holds: the fit takes
  // the longest sample the text allows.
  auto tok = make_byte_tokenizer(256, 257);
  const FillerText filler(filler_text());  // about 10 KB
  RetrievalGrid g = small_grid();
  g.lengths = {30000};
  g.depths = {0.5};
  g.trials_per_cell = 1;
  int64_t seen = 0;
  auto generate = [&](const std::vector<int64_t>& p, int64_t n) {
    seen = static_cast<int64_t>(p.size());
    return std::vector<int64_t>(static_cast<size_t>(n), '0');
  };
  // Through fit_to_tokens (a tokenizer given): no exception, a long prompt.
  const RetrievalResult r =
      evaluate_retrieval(RetrievalTask::kPasskey, filler, g, 256, generate, tok.get());
  EXPECT_EQ(r.trials(), 1);
  EXPECT_GT(seen, 5000);
  EXPECT_LT(seen, 30000);
}

}  // namespace
}  // namespace spindlekv
