// The evaluation's text and retrieval tasks: ppl, kl and fidelity, pass-key,
// LongBench-format JSONL (compression_eval.h describes them).
#include <ATen/ATen.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <tuple>

#include "core/error.h"
#include "eval/detail/eval_context.h"
#include "eval/metrics.h"
#include "eval/retrieval_eval.h"
#include "eval/statistics.h"
#include "model/next_token_kl.h"

namespace spindlekv {
namespace eval_detail {
namespace {

// Attention outputs of the method next to the full cache for the same queries.
class FidelityProbe : public AttentionCache {
 public:
  FidelityProbe(CompressedCache& full, CompressedCache& test, int64_t layers)
      : full_(full), test_(test), error_(layers, 0.0), count_(layers, 0) {}
  int64_t batch_size() const override { return full_.batch_size(); }
  int64_t next_position(int64_t b) const override { return full_.next_position(b); }
  at::Tensor append_and_attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const at::Tensor& pos) override {
    at::Tensor ref = full_.append_and_attend(layer, q, k, v, pos);
    at::Tensor got = test_.append_and_attend(layer, q, k, v, pos);
    error_[layer] += ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item<double>();
    ++count_[layer];
    return ref;  // the full path drives the next layer: errors do not compound
  }
  void advance(int64_t t) override {
    full_.advance(t);
    test_.advance(t);
  }
  void observe_tokens(const at::Tensor& tokens) override {
    full_.observe_tokens(tokens);
    test_.observe_tokens(tokens);
  }
  std::vector<double> errors() const {
    std::vector<double> out;
    for (size_t l = 0; l < error_.size(); ++l) out.push_back(count_[l] ? error_[l] / count_[l] : 0);
    return out;
  }

 private:
  CompressedCache& full_;
  CompressedCache& test_;
  std::vector<double> error_;
  std::vector<int64_t> count_;
};

}  // namespace

std::vector<EvalRecord> task_ppl_and_fidelity(const Context& cx, const MethodSpec& m,
                                              const EvalRecord& base,
                                              const std::vector<TextSample>& samples,
                                              const std::vector<Prefill>& prefills,
                                              const std::vector<Setting>& settings, bool ppl,
                                              bool kl, bool fidelity) {
  std::vector<EvalRecord> out;
  PromptStats mem(cx);
  double nats = 0, seconds_decode = 0;
  size_t bytes = 0;
  int64_t decoded = 0;
  std::vector<double> layer_error(cx.model.config().num_layers, 0.0);
  std::vector<double> kl_per_context, kl_tokens;
  const MethodSpec full = method_spec("full");
  for (size_t i = 0; i < samples.size(); ++i) {
    const TextSample& x = samples[i];
    const Prefill& p = prefills[i];
    const Setting& s = settings[i];
    at::Tensor cont = at::tensor(x.continuation, at::kLong).view({1, -1});
    if (ppl || kl) {
      auto cache = make_cache(cx, m, s);
      mem.add(*cache, compress(p, *cache), s);
      at::Tensor logits = cx.model.forward_with_cache(cont, *cache, false)[0];  // [M, V]
      if (kl) {
        // KL(full || method) of the distributions after each continuation token.
        auto ref = make_cache(cx, full, Setting{});
        compress(p, *ref);
        const at::Tensor per_token =
            next_token_kl(cx.model.forward_with_cache(cont, *ref, false)[0], logits).cpu();
        kl_per_context.push_back(per_token.mean().item<double>());
        const double* v = per_token.data_ptr<double>();
        kl_tokens.insert(kl_tokens.end(), v, v + per_token.numel());
      }
      if (!ppl) continue;
      at::Tensor prev =
          at::cat({p.last_logits.unsqueeze(0), logits.narrow(0, 0, logits.size(0) - 1)});
      at::Tensor logp = at::log_softmax(prev.to(at::kDouble), -1);
      nats -= logp.gather(1, cont.view({-1, 1}).to(logp.device())).sum().item<double>();
      bytes += x.continuation_bytes;
      // Decoding speed: greedy steps after the continuation, as many as the
      // model's context leaves room for (at most 16).
      const int64_t room = cx.model.config().max_position_embeddings -
                           static_cast<int64_t>(x.context.size() + x.continuation.size());
      const int64_t steps = std::min<int64_t>(16, room + 1);
      if (i == 0 && steps >= 2) {
        const auto t0 = Clock::now();
        decode_greedy(cx.model, *cache, logits.narrow(0, logits.size(0) - 1, 1), steps);
        seconds_decode += since(t0);
        decoded += steps - 1;
      }
    }
    if (fidelity) {
      auto ref = make_cache(cx, full, Setting{});
      auto test = make_cache(cx, m, s);
      compress(p, *ref);
      const double sec = compress(p, *test);
      if (!ppl && !kl) mem.add(*test, sec, s);
      FidelityProbe probe(*ref, *test, cx.model.config().num_layers);
      cx.model.forward_with_cache(cont, probe, true);
      const auto e = probe.errors();
      for (size_t l = 0; l < e.size(); ++l) layer_error[l] += e[l] / samples.size();
    }
  }
  if (ppl) {
    EvalRecord r = base;
    r.task = "ppl";
    r.metric = "bits_per_byte";
    r.value = bits_per_byte(nats, bytes);
    r.n = static_cast<int64_t>(samples.size());
    mem.fill(r);
    r.decode_tokens_per_second = seconds_decode > 0 ? decoded / seconds_decode : 0;
    out.push_back(r);
  }
  if (kl) {
    EvalRecord r = base;
    r.task = "kl";
    r.metric = "kl_mean";
    double sum = 0;
    for (double v : kl_per_context) sum += v;
    r.value = sum / static_cast<double>(kl_per_context.size());
    std::tie(r.ci_low, r.ci_high) = bootstrap_mean_interval(kl_per_context, cx.o.seed);
    r.n = static_cast<int64_t>(samples.size());
    mem.fill(r);
    std::vector<double> sorted = kl_tokens;
    std::sort(sorted.begin(), sorted.end());
    const double p99 =
        sorted[std::min(sorted.size() - 1, static_cast<size_t>(0.99 * sorted.size()))];
    r.detail_json =
        nlohmann::json{{"per_context", kl_per_context}, {"p99", p99}, {"tokens", sorted.size()}}
            .dump();
    out.push_back(r);
  }
  if (fidelity) {
    EvalRecord r = base;
    r.task = "fidelity";
    r.metric = "attention_relative_error";
    double mean = 0;
    for (double e : layer_error) mean += e / layer_error.size();
    r.value = mean;
    r.n = static_cast<int64_t>(samples.size());
    mem.fill(r);
    if (ppl && !out.empty()) r.decode_tokens_per_second = out[0].decode_tokens_per_second;
    r.detail_json = nlohmann::json{{"per_layer", layer_error}}.dump();
    out.push_back(r);
  }
  return out;
}

EvalRecord task_passkey(const Context& cx, const MethodSpec& m, const EvalRecord& base,
                        const SettingSearch& search) {
  SKV_CHECK(!cx.bos.empty(), "the passkey task needs a model with a BOS token");
  RetrievalGrid grid;
  grid.lengths = cx.o.passkey_lengths;
  grid.depths = cx.o.passkey_depths;
  grid.trials_per_cell = cx.o.passkey_trials;
  grid.seed = cx.o.seed;
  FillerText filler(cx.text);
  PromptStats mem(cx);
  double decode_seconds = 0;
  int64_t decoded = 0;
  auto generate = [&](const std::vector<int64_t>& prompt, int64_t n) {
    const Prefill p = run_prefill(cx, prompt, rows_needed(cx, m, prompt.size()));
    const Setting s = search.for_prefill(p);
    auto cache = make_cache(cx, m, s);
    mem.add(*cache, compress(p, *cache), s);
    const auto t0 = Clock::now();
    auto out = decode_greedy(cx.model, *cache, p.last_logits.view({1, -1}), n)[0];
    decode_seconds += since(t0);
    decoded += n - 1;
    return out;
  };
  const RetrievalResult res =
      evaluate_retrieval(RetrievalTask::kPasskey, filler, grid, cx.bos[0], generate,
                         cx.tokenizer->name() == "byte" ? nullptr : cx.tokenizer.get());
  EvalRecord r = base;
  r.task = "passkey";
  r.metric = "accuracy";
  set_outcomes(r, res.outcomes);
  mem.fill(r);
  r.decode_tokens_per_second = decode_seconds > 0 ? decoded / decode_seconds : 0;
  nlohmann::json cells = nlohmann::json::array();
  for (const auto& c : res.cells) {
    cells.push_back(
        {{"length", c.length}, {"depth", c.depth}, {"trials", c.trials}, {"correct", c.correct}});
  }
  r.detail_json = nlohmann::json{{"cells", cells}}.dump();
  return r;
}

std::vector<EvalRecord> task_jsonl(const Context& cx, const MethodSpec& m, const EvalRecord& base,
                                   const SettingSearch& search, const std::string& path) {
  std::ifstream in(path);
  SKV_CHECK(in.good(), "cannot open JSONL task file '", path, "'");
  std::string line;
  int64_t n = 0, lineno = 0;
  double f1 = 0, rouge = 0;
  std::vector<int> contained, exact;
  PromptStats mem(cx);
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (cx.o.jsonl_limit > 0 && n >= cx.o.jsonl_limit) break;
    std::string context, input;
    std::vector<std::string> answers;
    try {
      const auto j = nlohmann::json::parse(line);
      context = j.at("context").get<std::string>();
      input = j.value("input", std::string());
      answers = j.at("answers").get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception& e) {
      SKV_THROW(kInvalidInput, "'", path, "' line ", lineno, ": ", e.what());
    }
    std::vector<int64_t> prompt = cx.bos;
    const auto ids = cx.tokenizer->encode(context + input);
    prompt.insert(prompt.end(), ids.begin(), ids.end());
    const int64_t max_new = cx.o.jsonl_max_new;
    SKV_CHECK_LE(static_cast<int64_t>(prompt.size()) + max_new,
                 cx.model.config().max_position_embeddings, "'", path, "' line ", lineno,
                 ": prompt too long for the model");
    const Prefill p = run_prefill(cx, prompt, rows_needed(cx, m, prompt.size()));
    const Setting s = search.for_prefill(p);
    auto cache = make_cache(cx, m, s);
    mem.add(*cache, compress(p, *cache), s);
    std::string text = cx.tokenizer->decode(
        decode_greedy(cx.model, *cache, p.last_logits.view({1, -1}), max_new)[0]);
    text = text.substr(0, text.find('\n'));
    contained.push_back(best_over_answers(contains_answer, text, answers) > 0 ? 1 : 0);
    exact.push_back(best_over_answers(exact_match, text, answers) > 0 ? 1 : 0);
    f1 += best_over_answers(token_f1, text, answers);
    rouge += best_over_answers(rouge_l, text, answers);
    ++n;
  }
  SKV_CHECK_GT(n, 0, "'", path, "' holds no samples");
  std::vector<EvalRecord> out;
  auto record = [&](const char* metric, double value) {
    EvalRecord r = base;
    r.task = "jsonl:" + path;
    r.metric = metric;
    r.value = value;
    r.n = n;
    mem.fill(r);
    return r;
  };
  for (const auto& [metric, outcomes] :
       {std::pair<const char*, const std::vector<int>*>{"contains", &contained},
        {"exact_match", &exact}}) {
    EvalRecord r = record(metric, 0.0);
    set_outcomes(r, *outcomes);
    out.push_back(r);
  }
  out.push_back(record("f1", f1 / n));
  out.push_back(record("rouge_l", rouge / n));
  return out;
}

}  // namespace eval_detail
}  // namespace spindlekv
