// RULER in `spindlekv eval` (eval/ruler_tasks.h generates the samples).
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/detail/eval_context.h"
#include "eval/ruler_tasks.h"

namespace spindlekv {
namespace eval_detail {

// RULER samples in each protocol. Question-aware: the prompt is context +
// question, compressed whole. Question-agnostic: the context is compressed
// (its memory is what is measured), then the question is fed through the
// compressed cache before decoding.
std::vector<EvalRecord> task_ruler(const Context& cx, const MethodSpec& m, const EvalRecord& base,
                                   const SettingSearch& search,
                                   const std::vector<RulerSample>& samples,
                                   const std::vector<std::string>& protocols) {
  std::vector<EvalRecord> out;
  for (const std::string& protocol : protocols) {
    const bool aware = protocol == "question-aware";
    struct Group {
      std::string task;
      int64_t length;
      PromptStats mem;
      std::vector<double> scores;
      nlohmann::json generations = nlohmann::json::array();
    };
    std::vector<Group> groups;
    PromptStats all(cx);
    std::vector<double> all_scores;
    for (const RulerSample& s : samples) {
      if (groups.empty() || groups.back().task != s.task || groups.back().length != s.length) {
        groups.push_back({s.task, s.length, PromptStats(cx), {}});
      }
      std::vector<int64_t> prompt = cx.bos, question;
      const auto ids = cx.tokenizer->encode(aware ? s.context + s.question : s.context);
      prompt.insert(prompt.end(), ids.begin(), ids.end());
      if (!aware) question = cx.tokenizer->encode(s.question);
      SKV_CHECK_LE(static_cast<int64_t>(prompt.size() + question.size()) + s.max_new_tokens,
                   cx.model.config().max_position_embeddings, "RULER ", s.task, " at ", s.length,
                   " tokens with ", s.max_new_tokens, " to generate exceeds the model's context");
      const Prefill p = run_prefill(cx, prompt, rows_needed(cx, m, prompt.size()));
      const Setting st = search.for_prefill(p);
      auto cache = make_cache(cx, m, st);
      const double seconds = compress(p, *cache);
      groups.back().mem.add(*cache, seconds, st);
      all.add(*cache, seconds, st);
      at::Tensor last = p.last_logits.view({1, -1});
      if (!question.empty()) {
        last = cx.model.forward_with_cache(at::tensor(question, at::kLong).view({1, -1}), *cache)
                   .view({1, -1});
      }
      const std::string text =
          cx.tokenizer->decode(decode_greedy(cx.model, *cache, last, s.max_new_tokens)[0]);
      groups.back().scores.push_back(string_match_all(text, s.answers));
      groups.back().generations.push_back(
          {{"index", s.index}, {"score", groups.back().scores.back()}, {"generation", text}});
      all_scores.push_back(groups.back().scores.back());
    }
    // Per task and length: the mean string match, and the share of samples
    // with every answer found (a proportion, with its Wilson interval).
    auto add = [&](const std::string& task, const PromptStats& mem,
                   const std::vector<double>& scores, const nlohmann::json& generations) {
      EvalRecord r = base;
      if (!generations.empty()) r.detail_json = nlohmann::json{{"samples", generations}}.dump();
      r.task = task;
      r.metric = "string_match_all";
      r.n = static_cast<int64_t>(scores.size());
      for (double v : scores) r.value += v / static_cast<double>(scores.size());
      mem.fill(r);
      out.push_back(r);
      r.metric = "all_found";
      std::vector<int> outcomes;
      for (double v : scores) outcomes.push_back(v >= 1.0 ? 1 : 0);
      set_outcomes(r, outcomes);
      out.push_back(r);
    };
    for (const Group& g : groups) {
      add("ruler:" + g.task + "@" + std::to_string(g.length) + ":" + protocol, g.mem, g.scores,
          g.generations);
    }
    add("ruler:average:" + protocol, all, all_scores, nlohmann::json::array());
  }
  return out;
}

}  // namespace eval_detail
}  // namespace spindlekv
