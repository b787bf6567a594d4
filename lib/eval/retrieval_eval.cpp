#include "eval/retrieval_eval.h"

#include "core/error.h"

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
                                   const GreedyGenerator& generate) {
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
        // BOS + prompt + answer fill `length` tokens, so the answer is
        // generated within the context the grid names.
        SKV_CHECK_GT(length, grid.tasks.digits + 2, "retrieval length ", length, " too short");
        const size_t bytes = static_cast<size_t>(length - 1 - grid.tasks.digits);
        RetrievalSample s = task == RetrievalTask::kPasskey
                                ? make_passkey_sample(filler, rng, bytes, depth, grid.tasks)
                                : make_multikey_sample(filler, rng, bytes, depth, grid.tasks);
        std::vector<int64_t> ids = {bos_token};
        for (unsigned char c : s.prompt) ids.push_back(c);
        std::vector<int64_t> out = generate(ids, static_cast<int64_t>(s.answer.size()));
        std::string text;
        for (int64_t id : out) text.push_back(id >= 0 && id < 256 ? static_cast<char>(id) : '\0');
        ++cell.trials;
        const bool correct = text == s.answer;
        cell.correct += correct;
        result.outcomes.push_back(correct ? 1 : 0);
      }
      result.cells.push_back(cell);
    }
  }
  return result;
}

}  // namespace spindlekv
