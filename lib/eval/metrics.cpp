#include "eval/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <sstream>

#include "core/error.h"

namespace spindlekv {

std::string normalize_answer(const std::string& text) {
  std::string s;
  for (unsigned char c : text) {
    if (std::ispunct(c)) continue;
    s += static_cast<char>(std::tolower(c));
  }
  std::istringstream in(s);
  std::string word, out;
  while (in >> word) {
    if (word == "a" || word == "an" || word == "the") continue;
    if (!out.empty()) out += ' ';
    out += word;
  }
  return out;
}

std::vector<std::string> answer_tokens(const std::string& text) {
  std::istringstream in(normalize_answer(text));
  std::vector<std::string> out;
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

double exact_match(const std::string& prediction, const std::string& reference) {
  return normalize_answer(prediction) == normalize_answer(reference) ? 1.0 : 0.0;
}

double contains_answer(const std::string& prediction, const std::string& reference) {
  const std::string ref = normalize_answer(reference);
  if (ref.empty()) return 0.0;
  const std::string pred = " " + normalize_answer(prediction) + " ";
  return pred.find(" " + ref + " ") != std::string::npos ? 1.0 : 0.0;
}

double token_f1(const std::string& prediction, const std::string& reference) {
  const auto p = answer_tokens(prediction), r = answer_tokens(reference);
  if (p.empty() || r.empty()) return 0.0;
  std::map<std::string, int> counts;
  for (const auto& w : r) ++counts[w];
  int common = 0;
  for (const auto& w : p) {
    auto it = counts.find(w);
    if (it != counts.end() && it->second > 0) --it->second, ++common;
  }
  if (common == 0) return 0.0;
  const double precision = static_cast<double>(common) / p.size();
  const double recall = static_cast<double>(common) / r.size();
  return 2 * precision * recall / (precision + recall);
}

double rouge_l(const std::string& prediction, const std::string& reference) {
  const auto p = answer_tokens(prediction), r = answer_tokens(reference);
  if (p.empty() || r.empty()) return 0.0;
  std::vector<int> prev(r.size() + 1, 0), cur(r.size() + 1, 0);
  for (size_t i = 1; i <= p.size(); ++i) {
    for (size_t j = 1; j <= r.size(); ++j) {
      cur[j] = p[i - 1] == r[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  const double lcs = prev[r.size()];
  if (lcs == 0) return 0.0;
  const double precision = lcs / p.size(), recall = lcs / r.size();
  return 2 * precision * recall / (precision + recall);
}

double best_over_answers(double (*score)(const std::string&, const std::string&),
                         const std::string& prediction, const std::vector<std::string>& answers) {
  double best = 0;
  for (const auto& a : answers) best = std::max(best, score(prediction, a));
  return best;
}

double bits_per_byte(double total_nats, size_t bytes) {
  SKV_CHECK_GT(bytes, 0u, "bits per byte of empty text");
  return total_nats / std::log(2.0) / static_cast<double>(bytes);
}

}  // namespace spindlekv
