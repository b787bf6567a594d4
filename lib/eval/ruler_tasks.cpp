#include "eval/ruler_tasks.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "model/tokenizer.h"

namespace spindlekv {
namespace {

// RULER's templates (scripts/data/synthetic/constants.py and niah.py), the
// answer prefix appended to the question as RULER does.
constexpr const char* kNoise =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
constexpr const char* kNiahHead =
    "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the numbers afterwards.\n";

std::string niah_needle(const std::string& key, const std::string& value) {
  return "One of the special magic numbers for " + key + " is: " + value + ".";
}

std::string niah_question(const std::string& query) {
  return "\nWhat are all the special magic numbers for " + query +
         " mentioned in the provided text? The special magic numbers for " + query +
         " mentioned in the provided text are";
}

// What a builder makes from a haystack of `units` steps.
struct Draft {
  std::string context, question;
  std::vector<std::string> answers;
  double depth = -1;
};

uint64_t sample_seed(uint64_t seed, const std::string& task, int64_t length, int64_t index) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the task name
  for (unsigned char ch : task) h = (h ^ ch) * 1099511628211ull;
  std::seed_seq seq{static_cast<uint32_t>(seed),   static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(h),      static_cast<uint32_t>(h >> 32),
                    static_cast<uint32_t>(length), static_cast<uint32_t>(index)};
  std::mt19937_64 rng(seq);
  return rng();
}

int64_t pick(std::mt19937_64& rng, int64_t n) {
  return static_cast<int64_t>(std::uniform_int_distribution<uint64_t>(0, n - 1)(rng));
}

std::string digits(std::mt19937_64& rng, int n) {
  std::string s(1, static_cast<char>('1' + pick(rng, 9)));
  while (static_cast<int>(s.size()) < n) s += static_cast<char>('0' + pick(rng, 10));
  return s;
}

// `count` distinct words of the list.
std::vector<std::string> distinct_words(std::mt19937_64& rng, const std::vector<std::string>& words,
                                        int64_t count) {
  SKV_CHECK_LE(count, static_cast<int64_t>(words.size()), "words needed");
  std::set<int64_t> used;
  std::vector<std::string> out;
  while (static_cast<int64_t>(out.size()) < count) {
    const int64_t i = pick(rng, static_cast<int64_t>(words.size()));
    if (used.insert(i).second) out.push_back(words[i]);
  }
  return out;
}

// `units` haystack steps: noise sentences, or words of the given text from a
// random offset (wrapping around).
std::vector<std::string> haystack(std::mt19937_64& rng, const RulerResources& res, int64_t units) {
  if (res.haystack.empty()) return std::vector<std::string>(units, kNoise);
  const int64_t W = static_cast<int64_t>(res.haystack.size());
  const int64_t start = pick(rng, W);
  std::vector<std::string> out;
  for (int64_t i = 0; i < units; ++i) out.push_back(res.haystack[(start + i) % W]);
  return out;
}

// Inserts `needles` (text, depth in 0..1) between haystack steps; returns the
// joined text.
std::string insert_needles(std::vector<std::string> units,
                           std::vector<std::pair<std::string, double>> needles) {
  const double n = static_cast<double>(units.size());
  std::stable_sort(needles.begin(), needles.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  for (const auto& [text, depth] : needles) {  // deepest first: earlier offsets stay valid
    const auto at = static_cast<int64_t>(std::llround(depth * n));
    units.insert(units.begin() + at, text);
  }
  std::string out;
  for (const auto& u : units) out += (out.empty() ? "" : " ") + u;
  return out;
}

double uniform(std::mt19937_64& rng) { return std::uniform_real_distribution<double>(0, 1)(rng); }

Draft niah(const std::string& task, int64_t units, double depth, uint64_t seed,
           const RulerResources& res) {
  std::mt19937_64 rng(seed);
  const int64_t keys = task == "niah_multiquery" || task == "niah_multikey" ? 4 : 1;
  const std::vector<std::string> key = distinct_words(rng, res.words, keys);
  std::vector<std::pair<std::string, double>> needles;
  Draft d;
  d.depth = depth;
  if (task == "niah_multivalue") {
    for (int i = 0; i < 4; ++i) {
      d.answers.push_back(digits(rng, 7));
      needles.emplace_back(niah_needle(key[0], d.answers.back()), i == 0 ? depth : uniform(rng));
    }
  } else {
    for (int64_t k = 0; k < keys; ++k) {  // multikey: keys 1-3 are distractors
      const std::string value = digits(rng, 7);
      if (k == 0 || task == "niah_multiquery") d.answers.push_back(value);
      needles.emplace_back(niah_needle(key[k], value), k == 0 ? depth : uniform(rng));
    }
  }
  std::vector<std::string> hay;
  if (task == "niah_multikey_dense") {  // the haystack is other keys' needles
    const std::vector<std::string> others = distinct_words(rng, res.words, units + 1);
    for (int64_t i = 0; i < units; ++i) {
      hay.push_back(niah_needle(others[i] == key[0] ? others[units] : others[i], digits(rng, 7)));
    }
  } else {
    hay = haystack(rng, res, units);
  }
  d.context = kNiahHead + insert_needles(hay, needles);
  std::string query = key[0];
  if (task == "niah_multiquery") query = key[0] + ", " + key[1] + ", " + key[2] + ", and " + key[3];
  d.question = niah_question(query);
  return d;
}

Draft variable_tracking(int64_t units, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::set<std::string> names;
  while (names.size() < 5) {
    std::string v;
    for (int i = 0; i < 5; ++i) v += static_cast<char>('A' + pick(rng, 26));
    names.insert(v);
  }
  std::vector<std::string> chain(names.begin(), names.end());
  std::shuffle(chain.begin(), chain.end(), rng);
  const std::string value = digits(rng, 5);
  std::vector<double> at(chain.size());
  for (double& a : at) a = uniform(rng);
  std::sort(at.begin(), at.end());  // the chain in order through the text
  std::vector<std::pair<std::string, double>> statements;
  for (size_t i = 0; i < chain.size(); ++i) {
    statements.emplace_back(
        "VAR " + chain[i] + " = " + (i == 0 ? value : "VAR " + chain[i - 1]) + ".", at[i]);
  }
  Draft d;
  d.depth = at[0];
  d.answers = chain;
  d.context =
      "Memorize and track the chain(s) of variable assignment hidden in the following "
      "text.\n\n" +
      insert_needles(std::vector<std::string>(units, kNoise), statements);
  // RULER's answer prefix, its spelling kept.
  d.question = "\nQuestion: Find all variables that are assigned the value " + value +
               " in the text above. Answer: According to the chain(s) of variable assignment in "
               "the text above, 5 variables are assgined the value " +
               value + ", they are: ";
  return d;
}

Draft common_words(int64_t units, int64_t freq_common, int64_t freq_rare, uint64_t seed,
                   const RulerResources& res) {
  std::mt19937_64 rng(seed);
  const std::vector<std::string> words = distinct_words(rng, res.words, 10 + units);
  std::vector<std::string> list;
  for (int64_t i = 0; i < 10 + units; ++i) {
    for (int64_t k = 0; k < (i < 10 ? freq_common : freq_rare); ++k) list.push_back(words[i]);
  }
  std::shuffle(list.begin(), list.end(), rng);
  Draft d;
  d.answers.assign(words.begin(), words.begin() + 10);
  d.context =
      "Below is a numbered list of words. In these words, some appear more often than "
      "others. Memorize the ones that appear most often.\n";
  for (size_t i = 0; i < list.size(); ++i) {
    d.context += (i ? " " : "") + std::to_string(i + 1) + ". " + list[i];
  }
  d.question =
      "\nQuestion: What are the 10 most common words in the above list? Answer: The top "
      "10 words that appear most often in the list are:";
  return d;
}

Draft frequent_words(int64_t units, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t V = 200;
  std::vector<std::string> vocab{"...."};  // rank 1: the dots RULER says to ignore
  std::set<std::string> seen;
  while (static_cast<int64_t>(vocab.size()) < V) {
    std::string w;
    const int64_t len = 3 + pick(rng, 4);
    for (int64_t i = 0; i < len; ++i) w += static_cast<char>('a' + pick(rng, 26));
    if (seen.insert(w).second) vocab.push_back(w);
  }
  std::vector<double> weight(V);
  for (int64_t r = 0; r < V; ++r) weight[r] = 1.0 / static_cast<double>((r + 1) * (r + 1));
  std::discrete_distribution<int64_t> zipf(weight.begin(), weight.end());
  std::vector<int64_t> count(V, 0);
  Draft d;
  d.context =
      "Read the following coded text and track the frequency of each coded word. Find the "
      "three most frequently appeared coded words.";
  for (int64_t i = 0; i < units; ++i) {
    const int64_t r = zipf(rng);
    ++count[r];
    d.context += " " + vocab[r];
  }
  std::vector<int64_t> order;
  for (int64_t r = 1; r < V; ++r) order.push_back(r);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return count[a] > count[b]; });
  for (int i = 0; i < 3; ++i) d.answers.push_back(vocab[order[i]]);
  d.question =
      "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What "
      "are the three most frequently appeared words in the above coded text? Answer: "
      "According to the coded text above, the three most frequently appeared words are:";
  return d;
}

}  // namespace

const std::vector<std::string>& ruler_task_names() {
  static const std::vector<std::string> names = {"niah_single",
                                                 "niah_multikey",
                                                 "niah_multikey_dense",
                                                 "niah_multivalue",
                                                 "niah_multiquery",
                                                 "vt",
                                                 "cwe",
                                                 "fwe"};
  return names;
}

bool is_ruler_task(const std::string& name) {
  const auto& n = ruler_task_names();
  return std::find(n.begin(), n.end(), name) != n.end();
}

std::vector<std::string> haystack_words(const std::string& text) {
  std::vector<std::string> words;
  std::string w;
  for (char ch : text) {
    if (!std::isspace(static_cast<unsigned char>(ch))) {
      w += ch;
    } else if (!w.empty()) {
      words.push_back(w);
      w.clear();
    }
  }
  if (!w.empty()) words.push_back(w);
  SKV_CHECK(!words.empty(), "the RULER haystack text holds no words");
  return words;
}

std::vector<std::string> load_word_list(const std::string& path) {
  std::ifstream in(path);
  SKV_CHECK(in.good(), "cannot read the word list '", path,
            "' (Debian: apt-get install wamerican, or pass another list)");
  std::set<std::string> words;
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < 3 || line.size() > 10) continue;
    if (std::all_of(line.begin(), line.end(), [](char ch) { return ch >= 'a' && ch <= 'z'; })) {
      words.insert(line);
    }
  }
  SKV_CHECK_GE(static_cast<int64_t>(words.size()), 1000, "usable words (lowercase a-z, 3-10 ",
               "letters) in the word list '", path, "'");
  return {words.begin(), words.end()};
}

int64_t ruler_max_new_tokens(const std::string& task) {
  return task == "vt" ? 30 : task == "cwe" ? 120 : task == "fwe" ? 50 : 128;
}

RulerSample make_ruler_sample(const std::string& task, const Tokenizer& tokenizer, int64_t length,
                              int64_t index, uint64_t seed, const RulerResources& res) {
  return with_context("RULER task '" + task + "' at " + std::to_string(length) + " tokens", [&] {
    SKV_CHECK(is_ruler_task(task), "unknown task (known: niah_single, niah_multikey, ",
              "niah_multikey_dense, niah_multivalue, niah_multiquery, vt, cwe, fwe)");
    SKV_CHECK_GT(length, 0, "length");
    const bool needs_words = task.rfind("niah", 0) == 0 || task == "cwe";
    SKV_CHECK(!needs_words || res.words.size() >= 1000, "task needs a word list (load_word_list)");
    const int64_t max_new = ruler_max_new_tokens(task);
    // As RULER: the answer's tokens count against the length (and so does a BOS).
    const int64_t budget = length - max_new - 1;
    const uint64_t s = sample_seed(seed, task, length, index);
    const double depth = static_cast<double>(index % 5) / 4.0;
    // cwe shrinks RULER's frequencies (30 and 3) only when they cannot fit.
    int64_t freq_common = 30, freq_rare = 3;
    std::function<Draft(int64_t)> build = [&](int64_t units) -> Draft {
      if (task == "vt") return variable_tracking(units, s);
      if (task == "cwe") return common_words(units, freq_common, freq_rare, s, res);
      if (task == "fwe") return frequent_words(units, s);
      return niah(task, units, depth, s, res);
    };
    // The prompt as either protocol feeds it: the question-agnostic one
    // tokenises the context and the question apart, which can take a token
    // more (a SentencePiece word boundary), so both must fit.
    auto tokens = [&](const Draft& d) {
      const auto joint = tokenizer.encode(d.context + d.question).size();
      const auto apart = tokenizer.encode(d.context).size() + tokenizer.encode(d.question).size();
      return static_cast<int64_t>(std::max(joint, apart));
    };
    if (task == "cwe") {
      for (int64_t f : {30, 20, 10, 6, 4}) {
        freq_common = f, freq_rare = std::min<int64_t>(3, f - 1);
        if (tokens(build(0)) <= budget) break;
      }
    }
    const int64_t empty = tokens(build(0));
    SKV_CHECK(empty <= budget, "even without a haystack the sample takes ", empty, " tokens, and ",
              max_new, " more are generated");
    // The largest haystack that fits: doubling, then bisection.
    int64_t lo = 0, hi = 1;
    while (tokens(build(hi)) <= budget) {
      lo = hi;
      hi *= 2;
      SKV_CHECK_LT(hi, int64_t{1} << 26, "haystack steps");
    }
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      (tokens(build(mid)) <= budget ? lo : hi) = mid;
    }
    const Draft d = build(lo);
    RulerSample out;
    out.task = task;
    out.length = length;
    out.index = index;
    out.context = d.context;
    out.question = d.question;
    out.answers = d.answers;
    out.depth = d.depth;
    out.max_new_tokens = max_new;
    out.tokens = tokens(d);
    return out;
  });
}

double string_match_all(const std::string& generation, const std::vector<std::string>& answers) {
  if (answers.empty()) return 1.0;
  auto lower = [](std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  };
  const std::string g = lower(generation);
  int64_t found = 0;
  for (const auto& a : answers) found += g.find(lower(a)) != std::string::npos;
  return static_cast<double>(found) / static_cast<double>(answers.size());
}

void write_ruler_jsonl(const std::string& path, const std::vector<RulerSample>& samples) {
  std::string out;
  for (const RulerSample& s : samples) {
    out += nlohmann::json{{"task", s.task},
                          {"length", s.length},
                          {"index", s.index},
                          {"depth", s.depth},
                          {"tokens", s.tokens},
                          {"max_new_tokens", s.max_new_tokens},
                          {"input", s.context + s.question},
                          {"context", s.context},
                          {"question", s.question},
                          {"answers", s.answers}}
               .dump() +
           "\n";
  }
  write_file_atomically(path, out);
}

}  // namespace spindlekv
