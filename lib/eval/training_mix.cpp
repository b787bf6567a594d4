#include "eval/training_mix.h"

#include <algorithm>
#include <cstdlib>
#include <tuple>

#include "core/error.h"
#include "eval/ruler_tasks.h"
#include "model/tokenizer.h"

namespace spindlekv {
namespace {

bool is_byte_task(const std::string& t) { return t == "passkey" || t == "multikey"; }

constexpr const char* kRepeatTask = "repeat";
constexpr int64_t kRepeatMinSpan = 8;  // tokens

// Everything the source needs, shared by its copies.
struct MixState {
  const Tokenizer& tokenizer;
  TrainingMixParameters p;
  FillerText filler;
  TokenCorpus corpus;
  RulerResources noise, text;  // NIAH haystacks: RULER's noise, or the corpus's words
  std::vector<double> cumulative;
  std::vector<int64_t> gap;  // a blank line, as it continues a text
};

// The ids of `prefix` + `suffix`, and where `suffix`'s own ids begin: past
// the common prefix with `prefix`'s tokenisation (SentencePiece marks a word
// start with a space, so a text's first piece differs from its continuation).
std::pair<std::vector<int64_t>, size_t> encode_continued(const Tokenizer& tok,
                                                         const std::string& prefix,
                                                         const std::string& suffix) {
  const std::vector<int64_t> a = tok.encode(prefix);
  std::vector<int64_t> b = tok.encode(prefix + suffix);
  size_t common = 0;
  while (common < a.size() && common < b.size() && a[common] == b[common]) ++common;
  return {std::move(b), common};
}

// `prompt` + `answer` as ids, with the answer's span marked.
TrainingSample encode_with_answer(const Tokenizer& tok, const std::string& prompt,
                                  const std::string& answer) {
  TrainingSample s;
  size_t begin = 0;
  std::tie(s.ids, begin) = encode_continued(tok, prompt, answer);
  s.answer_begin = static_cast<int64_t>(begin);
  s.answer_length = static_cast<int64_t>(s.ids.size() - begin);
  return s;
}

// A corpus span, a blank line, and the span again: the second copy (but its
// first token, which nothing announces) is the answer. The plainest lesson in
// copying what came before, the mechanism every retrieval task needs.
TrainingSample draw_repeat(MixState& st, std::mt19937_64& rng, int64_t length) {
  const int64_t gap = static_cast<int64_t>(st.gap.size());
  SKV_CHECK_GE(length, 2 * (kRepeatMinSpan + gap), "repeat sample length ", length, " too short");
  std::uniform_int_distribution<int64_t> span_of(kRepeatMinSpan, (length - gap) / 2);
  const std::vector<int64_t> span = st.corpus.window(rng, span_of(rng));
  TrainingSample s;
  s.ids = span;
  s.ids.insert(s.ids.end(), st.gap.begin(), st.gap.end());
  s.ids.insert(s.ids.end(), span.begin(), span.end());
  s.answer_begin = static_cast<int64_t>(span.size()) + gap + 1;
  s.answer_length = static_cast<int64_t>(span.size()) - 1;
  return s;
}

TrainingSample draw_task(MixState& st, const std::string& task, std::mt19937_64& rng,
                         int64_t length) {
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  if (task == kRepeatTask) return draw_repeat(st, rng, length);
  if (is_byte_task(task)) {
    const bool passkey = task == "passkey";
    const double depth = uniform(rng);
    auto make = [&](std::mt19937_64& r, size_t bytes) {
      return passkey ? make_passkey_sample(st.filler, r, bytes, depth, st.p.tasks)
                     : make_multikey_sample(st.filler, r, bytes, depth, st.p.tasks);
    };
    const size_t min_bytes =
        passkey ? passkey_min_bytes(st.p.tasks) : multikey_min_bytes(st.p.tasks);
    // One token of room for the line break after the answer.
    RetrievalSample s = fit_to_tokens(make, st.tokenizer, length, min_bytes, rng);
    return encode_with_answer(st.tokenizer, s.prompt, s.answer + "\n");
  }
  const bool text_haystack = uniform(rng) < st.p.text_haystack_fraction;
  const uint64_t index = rng() >> 1;
  // make_ruler_sample's length counts BOS and RULER's tokens to generate;
  // a training sample keeps room for an answer of up to kAnswerRoom tokens.
  constexpr int64_t kAnswerRoom = 40;
  const int64_t room = std::min(kAnswerRoom, ruler_max_new_tokens(task));
  RulerSample s =
      make_ruler_sample(task, st.tokenizer, length + 1 + ruler_max_new_tokens(task) - room,
                        static_cast<int64_t>(index), st.p.seed, text_haystack ? st.text : st.noise);
  std::string answer = s.question.empty() || s.question.back() == ' ' ? "" : " ";
  for (size_t i = 0; i < s.answers.size(); ++i) answer += (i ? ", " : "") + s.answers[i];
  return encode_with_answer(st.tokenizer, s.context + s.question, answer + ".\n");
}

}  // namespace

std::vector<MixEntry> parse_training_mix(const std::vector<std::string>& items) {
  std::vector<MixEntry> out;
  double total = 0;
  for (const std::string& item : items) {
    const size_t colon = item.rfind(':');
    SKV_CHECK(colon != std::string::npos, "training mix item '", item, "' is not task:fraction");
    MixEntry e;
    e.task = item.substr(0, colon);
    SKV_CHECK(is_byte_task(e.task) || e.task == kRepeatTask || is_ruler_task(e.task),
              "training mix item '", item, "': unknown task '", e.task,
              "' (repeat, passkey, multikey or a RULER task)");
    char* end = nullptr;
    const std::string number = item.substr(colon + 1);
    e.fraction = std::strtod(number.c_str(), &end);
    SKV_CHECK(!number.empty() && *end == '\0' && e.fraction >= 0 && e.fraction <= 1,
              "training mix item '", item, "': fraction '", number, "' is not in [0, 1]");
    total += e.fraction;
    out.push_back(e);
  }
  SKV_CHECK_LE(total, 1.0 + 1e-9, "training mix fractions sum to more than 1");
  return out;
}

SampleSource training_mix_samples(const std::string& text, const Tokenizer& tokenizer,
                                  const TrainingMixParameters& params) {
  auto st = std::make_shared<MixState>(
      MixState{tokenizer, params, FillerText(text), TokenCorpus(text, tokenizer), {}, {}, {}, {}});
  const auto [ids, begin] = encode_continued(tokenizer, "end.", "\n\n");
  st->gap.assign(ids.begin() + static_cast<int64_t>(begin), ids.end());
  bool ruler = false;
  double sum = 0;
  for (const MixEntry& e : params.mix) {
    ruler = ruler || is_ruler_task(e.task);
    st->cumulative.push_back(sum += e.fraction);
  }
  if (ruler) {
    st->noise.words = load_word_list(params.word_list);
    st->text.words = st->noise.words;
    // A few hundred thousand words of the corpus are plenty of haystack.
    st->text.haystack = haystack_words(text.substr(0, std::min<size_t>(text.size(), 2000000)));
  }
  SampleSource source = [st](std::mt19937_64& rng, int64_t length) {
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    const double u = uniform(rng);
    const auto it = std::upper_bound(st->cumulative.begin(), st->cumulative.end(), u);
    if (it == st->cumulative.end()) {
      TrainingSample s;
      s.ids = st->corpus.window(rng, length);
      return s;
    }
    const std::string& task = st->p.mix[it - st->cumulative.begin()].task;
    TrainingSample s = draw_task(*st, task, rng, length);
    if (static_cast<int64_t>(s.ids.size()) < length) {  // fill the rest: a blank line, then text
      s.ids.insert(s.ids.end(), st->gap.begin(), st->gap.end());
      if (length > static_cast<int64_t>(s.ids.size())) {
        const std::vector<int64_t> more =
            st->corpus.window(rng, length - static_cast<int64_t>(s.ids.size()));
        s.ids.insert(s.ids.end(), more.begin(), more.end());
      }
    }
    s.ids.resize(std::min<size_t>(s.ids.size(), static_cast<size_t>(length)));
    return s;
  };
  if (params.min_length > 0) {
    std::mt19937_64 scratch(params.seed);
    for (const MixEntry& e : params.mix) {
      with_context("training mix task '" + e.task + "' at the shortest sequence, " +
                       std::to_string(params.min_length) + " tokens",
                   [&] { draw_task(*st, e.task, scratch, params.min_length); });
    }
  }
  return source;
}

}  // namespace spindlekv
