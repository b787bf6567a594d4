#include "model/synthetic_tasks.h"

#include <algorithm>
#include <limits>
#include <set>

#include "core/error.h"
#include "model/tokenizer.h"

namespace spindlekv {
namespace {

std::string random_digits(std::mt19937_64& rng, int64_t n) {
  std::uniform_int_distribution<int> digit(0, 9);
  std::string s;
  for (int64_t i = 0; i < n; ++i) s.push_back(static_cast<char>('0' + digit(rng)));
  return s;
}

std::string random_key_name(std::mt19937_64& rng) {
  // Four upper-case letters: short enough to be cheap, with 456,976
  // possibilities so the lookup cannot be memorised.
  std::uniform_int_distribution<int> letter(0, 25);
  std::string s;
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>('A' + letter(rng)));
  return s;
}

// Inserts `facts` (text, depth) into `filler` at word boundaries.
std::string insert_facts(std::string filler, std::vector<std::pair<std::string, double>> facts) {
  // Insert from the back so earlier offsets stay valid.
  std::sort(facts.begin(), facts.end(),
            [](const auto& a, const auto& b) { return a.second > b.second; });
  for (const auto& [text, depth] : facts) {
    size_t at = static_cast<size_t>(depth * filler.size());
    at = std::min(at, filler.size());
    const size_t space = filler.rfind(' ', at);
    at = space == std::string::npos ? 0 : space + 1;
    filler.insert(at, text + " ");
  }
  return filler;
}

// Filler bytes every sample keeps at least, so the facts have text around them.
constexpr size_t kMinFiller = 16;

std::string passkey_fact(const std::string& key) {
  return "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
}
const char* kPasskeyQuestion = "\nWhat is the pass key? The pass key is ";

std::string multikey_fact(const std::string& name, const std::string& value) {
  return "The value of key " + name + " is " + value + ".";
}
std::string multikey_question(const std::string& name) {
  return "\nWhat is the value of key " + name + "? The value of key " + name + " is ";
}

}  // namespace

size_t passkey_min_bytes(const RetrievalTaskParameters& p) {
  return passkey_fact(std::string(p.digits, '0')).size() + 1 +
         std::string(kPasskeyQuestion).size() + kMinFiller + 1;
}

size_t multikey_min_bytes(const RetrievalTaskParameters& p) {
  return p.multikey_pairs * (multikey_fact("AAAA", std::string(p.digits, '0')).size() + 1) +
         multikey_question("AAAA").size() + kMinFiller + 1;
}

FillerText::FillerText(std::string text) : text_(std::move(text)) {
  SKV_CHECK_GE(text_.size(), size_t{64}, "filler text is too short");
}

std::string FillerText::window(std::mt19937_64& rng, size_t length) const {
  SKV_CHECK_LT(length + 1, text_.size(), "filler window longer than the filler text");
  std::uniform_int_distribution<size_t> start(0, text_.size() - length - 1);
  size_t s = start(rng);
  const size_t space = text_.find(' ', s);
  if (space != std::string::npos && space + 1 + length <= text_.size() && space - s < 32) {
    s = space + 1;
  }
  return text_.substr(s, length);
}

RetrievalSample make_passkey_sample(const FillerText& filler, std::mt19937_64& rng,
                                    size_t total_bytes, double depth,
                                    const RetrievalTaskParameters& params) {
  const std::string key = random_digits(rng, params.digits);
  const std::string fact = passkey_fact(key);
  const std::string question = kPasskeyQuestion;
  const size_t overhead = fact.size() + 1 + question.size();
  SKV_CHECK_GE(total_bytes, passkey_min_bytes(params), "passkey sample length ", total_bytes,
               " too short");
  RetrievalSample s;
  s.depth = depth;
  s.prompt = insert_facts(filler.window(rng, total_bytes - overhead), {{fact, depth}}) + question;
  s.answer = key;
  return s;
}

RetrievalSample make_multikey_sample(const FillerText& filler, std::mt19937_64& rng,
                                     size_t total_bytes, double depth,
                                     const RetrievalTaskParameters& params) {
  SKV_CHECK_GE(params.multikey_pairs, 1, "multikey_pairs must be at least 1");
  std::set<std::string> used;
  std::vector<std::pair<std::string, std::string>> pairs;
  while (static_cast<int64_t>(pairs.size()) < params.multikey_pairs) {
    std::string name = random_key_name(rng);
    if (used.insert(name).second) pairs.emplace_back(name, random_digits(rng, params.digits));
  }
  std::vector<std::pair<std::string, double>> facts;
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  size_t overhead = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    std::string fact = multikey_fact(pairs[i].first, pairs[i].second);
    overhead += fact.size() + 1;
    facts.emplace_back(std::move(fact), i == 0 ? depth : uniform(rng));
  }
  const std::string question = multikey_question(pairs[0].first);
  overhead += question.size();
  SKV_CHECK_GE(total_bytes, multikey_min_bytes(params), "multikey sample length ", total_bytes,
               " too short");
  RetrievalSample s;
  s.depth = depth;
  s.prompt = insert_facts(filler.window(rng, total_bytes - overhead), facts) + question;
  s.answer = pairs[0].second;
  return s;
}

RetrievalSample fit_to_tokens(const std::function<RetrievalSample(std::mt19937_64&, size_t)>& make,
                              const Tokenizer& tokenizer, int64_t length, size_t min_bytes,
                              std::mt19937_64& rng) {
  const std::mt19937_64 start = rng;
  // A sample of `bytes` and its tokens; an attempt beyond `min_bytes` that
  // cannot be built (more filler than the text holds) counts as too long.
  auto attempt = [&](size_t bytes, std::mt19937_64& r) -> std::pair<RetrievalSample, int64_t> {
    r = start;
    auto build = [&]() -> std::pair<RetrievalSample, int64_t> {
      RetrievalSample s = make(r, bytes);
      const auto n = static_cast<int64_t>(tokenizer.encode(s.prompt + s.answer).size());
      return {std::move(s), 1 + n};
    };
    if (bytes == min_bytes) return build();
    try {
      return build();
    } catch (const Error&) {
      return {RetrievalSample{}, std::numeric_limits<int64_t>::max()};
    }
  };
  std::mt19937_64 r;
  auto [best, tokens] = attempt(min_bytes, r);
  SKV_CHECK_LE(tokens, length, "even the shortest retrieval sample (", min_bytes,
               " bytes) takes more tokens than the length");
  std::mt19937_64 best_rng = r;
  // Bytes per token is at most a few dozen: grow until too long, then bisect.
  size_t lo = min_bytes, hi = min_bytes;
  for (;;) {
    hi = std::max(hi * 2, static_cast<size_t>(length) * 2);
    auto [s, n] = attempt(hi, r);
    if (n > length || hi > static_cast<size_t>(length) * 64) break;
    best = std::move(s), best_rng = r, lo = hi;
  }
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    auto [s, n] = attempt(mid, r);
    if (n <= length) {
      best = std::move(s), best_rng = r, lo = mid;
    } else {
      hi = mid;
    }
  }
  rng = best_rng;
  return best;
}

}  // namespace spindlekv
