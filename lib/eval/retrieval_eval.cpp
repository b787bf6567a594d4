#include "eval/retrieval_eval.h"

#include <algorithm>

#include "core/error.h"
#include "model/tokenizer.h"

namespace spindlekv {

const char* retrieval_task_name(RetrievalTask task) {
  return task == RetrievalTask::kPasskey ? "passkey" : "multikey";
}

int64_t RetrievalResult::trials() const {
  int64_t n = 0;
  for (const auto& c : cells) n += c.trials;
  return n;
}

int64_t RetrievalResult::correct() const {
  int64_t n = 0;
  for (const auto& c : cells) n += c.correct;
  return n;
}

double RetrievalResult::accuracy() const {
  return trials() > 0 ? static_cast<double>(correct()) / trials() : 0.0;
}

RetrievalResult evaluate_retrieval(RetrievalTask task, const FillerText& filler,
                                   const RetrievalGrid& grid, int64_t bos_token,
                                   const GreedyGenerator& generate, const Tokenizer* tokenizer) {
  SKV_CHECK(!grid.lengths.empty() && !grid.depths.empty(), "retrieval grid is empty");
  SKV_CHECK_GT(grid.trials_per_cell, 0, "trials_per_cell must be positive");
  RetrievalResult result;
  std::mt19937_64 rng(grid.seed);
  for (int64_t length : grid.lengths) {
    for (double depth : grid.depths) {
      RetrievalCell cell;
      cell.length = length;
      cell.depth = depth;
      for (int64_t t = 0; t < grid.trials_per_cell; ++t) {
        SKV_CHECK_GT(length, grid.tasks.digits + 2, "retrieval length ", length, " too short");
        const bool passkey = task == RetrievalTask::kPasskey;
        auto make = [&](std::mt19937_64& r, size_t bytes) {
          return passkey ? make_passkey_sample(filler, r, bytes, depth, grid.tasks)
                         : make_multikey_sample(filler, r, bytes, depth, grid.tasks);
        };
        bool correct = false;
        if (tokenizer == nullptr) {
          // BOS + prompt + answer fill `length` tokens, so the answer is
          // generated within the context the grid names.
          RetrievalSample s = make(rng, static_cast<size_t>(length - 1 - grid.tasks.digits));
          std::vector<int64_t> ids = {bos_token};
          for (unsigned char c : s.prompt) ids.push_back(c);
          std::vector<int64_t> out = generate(ids, static_cast<int64_t>(s.answer.size()));
          std::string text;
          for (int64_t id : out) text.push_back(id >= 0 && id < 256 ? static_cast<char>(id) : '\0');
          correct = text == s.answer;
        } else {
          const size_t min_bytes =
              passkey ? passkey_min_bytes(grid.tasks) : multikey_min_bytes(grid.tasks);
          RetrievalSample s = fit_to_tokens(make, *tokenizer, length, min_bytes, rng);
          std::vector<int64_t> ids = {bos_token};
          const std::vector<int64_t> prompt = tokenizer->encode(s.prompt);
          ids.insert(ids.end(), prompt.begin(), prompt.end());
          // The answer's tokens as they continue the prompt (at least one).
          const int64_t answer_tokens = std::max<int64_t>(
              1, static_cast<int64_t>(tokenizer->encode(s.prompt + s.answer).size()) -
                     static_cast<int64_t>(prompt.size()));
          std::string text = tokenizer->decode(generate(ids, answer_tokens));
          text.erase(0, text.find_first_not_of(' '));
          correct = text.compare(0, s.answer.size(), s.answer) == 0;
        }
        ++cell.trials;
        cell.correct += correct;
        result.outcomes.push_back(correct ? 1 : 0);
      }
      result.cells.push_back(cell);
    }
  }
  return result;
}

}  // namespace spindlekv
