#include "eval/compression_eval.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <tuple>

#include "core/error.h"
#include "core/model_fingerprint.h"
#include "eval/eval_methods.h"
#include "eval/metrics.h"
#include "eval/retrieval_eval.h"
#include "eval/statistics.h"
#include "model/compressed_prefill.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "runtime/artifact.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(EvalOptions, model_dir, artifact, out_dir, methods, ratios,
                                   tasks, text, ppl_samples, ppl_context, ppl_continuation,
                                   passkey_lengths, passkey_depths, passkey_trials, jsonl_max_new,
                                   jsonl_limit, window, ratio_tolerance, shared_requests, kv_dtype,
                                   seed)

std::string eval_options_json(const EvalOptions& options) { return nlohmann::json(options).dump(); }

void RangeStat::add(double v) {
  if (std::isnan(v)) return;
  mean = n == 0 ? v : (mean * n + v) / (n + 1);
  min = n == 0 ? v : std::min(min, v);
  max = n == 0 ? v : std::max(max, v);
  ++n;
}

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Setting {
  double reserve = 1.0;
  double key_threshold = std::nan("");
  double value_threshold = std::nan("");
};

struct Context {
  const EvalOptions& o;
  LlamaModel model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::shared_ptr<const Artifact> artifact;
  std::string text;
  std::vector<int64_t> bos;                           ///< empty or {bos}
  std::pair<at::Tensor, at::Tensor> layer0_by_token;  ///< for "+l0" methods
};

std::unique_ptr<CompressedCache> make_cache(const Context& cx, const MethodSpec& m,
                                            const Setting& s, int64_t batch = 1) {
  CompressionParameters p;
  p.reserve_ratio = s.reserve;
  p.budget = m.budget;
  p.window = cx.o.window;
  p.gqa = m.gqa;
  p.codebook = m.codebook;
  p.key_threshold = s.key_threshold;
  p.value_threshold = s.value_threshold;
  p.storage_dtype = parse_storage_dtype(cx.o.kv_dtype);
  p.quantization = m.quantization;
  p.fp8_scales = m.fp8_scales;
  auto cache = std::make_unique<CompressedCache>(cx.model.config().geometry(), batch, p,
                                                 m.needs_artifact() ? cx.artifact : nullptr);
  cache->set_policy(m.make_policy());
  if (m.token_id_layer0) {
    cache->hold_as_token_ids(0, cx.layer0_by_token.first, cx.layer0_by_token.second);
  }
  return cache;
}

// A prefill's captured K/V and attention, to compress many times.
using Prefill = PrefillCapture;

Prefill run_prefill(const Context& cx, const std::vector<int64_t>& prompt, int64_t rows) {
  return capture_prefill(cx.model, prompt, rows);
}

// Compresses `p` into sequence 0 of `cache`; returns the seconds it took.
double compress(const Prefill& p, CompressedCache& cache) {
  const auto t0 = Clock::now();
  compress_prefill(p, cache, 0);
  return since(t0);
}

int64_t rows_needed(const Context& cx, const MethodSpec& m, int64_t tokens) {
  return m.make_policy()->attention_rows(tokens, std::min(cx.o.window, tokens));
}

// Measured ratio of `m` with setting `s` on the probe prefill.
double probe_ratio(const Context& cx, const MethodSpec& m, const Setting& s, const Prefill& probe) {
  auto cache = make_cache(cx, m, s);
  compress(probe, *cache);
  return cache->memory().ratio_shared_by(cx.o.shared_requests);
}

// The knob setting whose measured ratio on the probe is closest to `target`.
Setting find_setting(const Context& cx, const MethodSpec& m, double target, const Prefill& probe) {
  const double tol = cx.o.ratio_tolerance;
  Setting s;
  s.reserve = 1.0;
  double r = probe_ratio(cx, m, s, probe);
  if (r < target - tol && m.codebook != CodebookMode::kNone) {
    // Everything kept is still too small: loosen the codebook instead, with
    // both thresholds moved towards 1 by the same share t.
    const double k0 = cx.artifact ? cx.artifact->key_threshold : paper::kKeyThreshold;
    const double v0 = cx.artifact ? cx.artifact->value_threshold : paper::kValueThreshold;
    double lo = 0, hi = 1;
    for (int it = 0; it < 14; ++it) {
      const double t = (lo + hi) / 2;
      s.key_threshold = k0 + t * (1 - k0);
      s.value_threshold = v0 + t * (1 - v0);
      r = probe_ratio(cx, m, s, probe);
      if (std::abs(r - target) <= tol / 4) break;
      (r < target ? lo : hi) = t;
    }
    return s;
  }
  double lo = 0.0, hi = 1.0;
  for (int it = 0; it < 20 && std::abs(r - target) > tol / 4; ++it) {
    s.reserve = (lo + hi) / 2;
    r = probe_ratio(cx, m, s, probe);
    (r < target ? lo : hi) = s.reserve;
  }
  return s;
}

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

// Every prompt gets its own setting, searched on its own prefill: a method's
// measured ratio depends on the prompt's length (the window is always kept)
// and, through GQA unions and codebooks, on its content.
class SettingSearch {
 public:
  SettingSearch(const Context& cx, const MethodSpec& m, double target)
      : cx_(cx), m_(m), target_(target) {}
  Setting for_prefill(const Prefill& p) const {
    if (m_.single_setting()) return Setting{};
    return find_setting(cx_, m_, target_, p);
  }

 private:
  const Context& cx_;
  const MethodSpec& m_;
  double target_;
};

struct TextSample {
  std::vector<int64_t> context, continuation;
  size_t continuation_bytes = 0;
};

std::vector<TextSample> text_samples(const Context& cx) {
  const EvalOptions& o = cx.o;
  SKV_CHECK_GT(o.ppl_samples, 0, "ppl samples");
  const int64_t want = o.ppl_context + o.ppl_continuation;
  SKV_CHECK_LE(want, cx.model.config().max_position_embeddings,
               "ppl context + continuation exceed the model's max_position_embeddings");
  // Byte windows generous enough for any tokenizer (a token is >= 1 byte).
  const size_t span = static_cast<size_t>(want) * 8;
  SKV_CHECK(cx.text.size() > span, "text '", o.text, "' has ", cx.text.size(),
            " bytes, too few for ", want, "-token samples");
  std::vector<TextSample> out;
  for (int64_t i = 0; i < o.ppl_samples; ++i) {
    size_t start =
        (cx.text.size() - span) * static_cast<size_t>(i) / static_cast<size_t>(o.ppl_samples);
    while (start > 0 && (static_cast<unsigned char>(cx.text[start]) & 0xC0) == 0x80) --start;
    std::vector<int64_t> ids = cx.tokenizer->encode(cx.text.substr(start, span));
    SKV_CHECK_GE(static_cast<int64_t>(ids.size() + cx.bos.size()), want, "sample ", i,
                 " too short");
    TextSample s;
    s.context = cx.bos;
    s.context.insert(s.context.end(), ids.begin(), ids.begin() + (o.ppl_context - cx.bos.size()));
    const auto cont_begin = ids.begin() + (o.ppl_context - cx.bos.size());
    s.continuation.assign(cont_begin, cont_begin + o.ppl_continuation);
    s.continuation_bytes = cx.tokenizer->decode(s.continuation).size();
    out.push_back(std::move(s));
  }
  return out;
}

EvalRecord base_record(const MethodSpec& m, double target) {
  EvalRecord r;
  r.method = m.name;
  r.target_ratio = target;
  r.fixed_ratio = m.fixed_ratio;
  return r;
}

// A proportion from per-prompt outcomes: its value, n and Wilson interval.
void set_outcomes(EvalRecord& r, std::vector<int> outcomes) {
  int64_t correct = 0;
  for (int o : outcomes) correct += o != 0;
  r.n = static_cast<int64_t>(outcomes.size());
  r.value = r.n > 0 ? static_cast<double>(correct) / static_cast<double>(r.n) : 0.0;
  std::tie(r.ci_low, r.ci_high) = wilson_interval(correct, r.n);
  r.outcomes = std::move(outcomes);
}

// Per-prompt memory and settings of one method x ratio x task, averaged.
class PromptStats {
 public:
  explicit PromptStats(const Context& cx) : cx_(cx) {}
  void add(const CompressedCache& c, double seconds, const Setting& s) {
    const MemoryReport m = c.memory();
    const int64_t N = cx_.o.shared_requests;
    held_ += m.held_bytes, full_ += m.full_bytes, total_ += m.shared_bytes_total;
    charged_ +=
        shared_bytes_per_request(static_cast<double>(m.shared_bytes_charged),
                                 static_cast<double>(m.shared_bytes_total), static_cast<double>(N));
    ratio_ += m.ratio_shared_by(N), excluding_ += m.ratio_excluding_shared;
    paper_ += m.paper_ratio, compress_ += seconds;
    const double heads = static_cast<double>(cx_.model.config().num_heads);
    kept_.resize(m.layers.size(), 0.0);
    for (size_t l = 0; l < m.layers.size(); ++l) {
      const LayerMemory& L = m.layers[l];
      if (L.tokens_seen > 0) kept_[l] += L.kept_head_tokens / (heads * L.tokens_seen);
    }
    settings_.reserve_ratio.add(s.reserve);
    settings_.key_threshold.add(s.key_threshold);
    settings_.value_threshold.add(s.value_threshold);
    ++n_;
  }
  void fill(EvalRecord& r) const {
    const double n = std::max<int64_t>(n_, 1);
    EvalMemory& m = r.memory;
    m.held_bytes = held_ / n, m.full_bytes = full_ / n;
    m.shared_bytes_total = total_ / n, m.shared_bytes_charged = charged_ / n;
    m.ratio = ratio_ / n, m.ratio_excluding_shared = excluding_ / n;
    m.shared_requests = cx_.o.shared_requests;
    m.kv_dtype = cx_.o.kv_dtype;
    r.measured_ratio = m.ratio;
    if (r.fixed_ratio) r.target_ratio = r.measured_ratio;  // no knob: its own ratio
    r.ratio_matched = std::abs(r.measured_ratio - r.target_ratio) <= cx_.o.ratio_tolerance;
    r.paper_ratio = paper_ / n;
    r.compression_ms = 1e3 * compress_ / n;
    r.settings = settings_;
    r.settings.kept_fraction.clear();
    for (double k : kept_) r.settings.kept_fraction.push_back(k / n);
  }

 private:
  const Context& cx_;
  int64_t n_ = 0;
  double held_ = 0, full_ = 0, total_ = 0, charged_ = 0, ratio_ = 0, excluding_ = 0, paper_ = 0,
         compress_ = 0;
  std::vector<double> kept_;
  EvalSettings settings_;
};

std::vector<EvalRecord> task_ppl_and_fidelity(const Context& cx, const MethodSpec& m,
                                              const EvalRecord& base,
                                              const std::vector<TextSample>& samples,
                                              const std::vector<Prefill>& prefills,
                                              const std::vector<Setting>& settings, bool ppl,
                                              bool fidelity) {
  std::vector<EvalRecord> out;
  PromptStats mem(cx);
  double nats = 0, seconds_decode = 0;
  size_t bytes = 0;
  int64_t decoded = 0;
  std::vector<double> layer_error(cx.model.config().num_layers, 0.0);
  const MethodSpec full = method_spec("full");
  for (size_t i = 0; i < samples.size(); ++i) {
    const TextSample& x = samples[i];
    const Prefill& p = prefills[i];
    const Setting& s = settings[i];
    at::Tensor cont = at::tensor(x.continuation, at::kLong).view({1, -1});
    if (ppl) {
      auto cache = make_cache(cx, m, s);
      mem.add(*cache, compress(p, *cache), s);
      at::Tensor logits = cx.model.forward_with_cache(cont, *cache, false)[0];  // [M, V]
      at::Tensor prev =
          at::cat({p.last_logits.unsqueeze(0), logits.narrow(0, 0, logits.size(0) - 1)});
      at::Tensor logp = at::log_softmax(prev.to(at::kDouble), -1);
      nats -= logp.gather(1, cont.view({-1, 1}).to(logp.device())).sum().item<double>();
      bytes += x.continuation_bytes;
      if (i == 0) {  // decoding speed: greedy steps after the continuation
        const auto t0 = Clock::now();
        decode_greedy(cx.model, *cache, logits.narrow(0, logits.size(0) - 1, 1), 16);
        seconds_decode += since(t0);
        decoded += 15;
      }
    }
    if (fidelity) {
      auto ref = make_cache(cx, full, Setting{});
      auto test = make_cache(cx, m, s);
      compress(p, *ref);
      const double sec = compress(p, *test);
      if (!ppl) mem.add(*test, sec, s);
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
  SKV_CHECK(
      cx.tokenizer->name() == "byte" && !cx.bos.empty(),
      "the passkey task needs a byte-level model with a BOS token; use jsonl: tasks otherwise");
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
      evaluate_retrieval(RetrievalTask::kPasskey, filler, grid, cx.bos[0], generate);
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

}  // namespace

std::vector<EvalRecord> run_eval(const EvalOptions& o,
                                 const std::function<void(const EvalProgress&)>& progress) {
  return with_context("eval", [&] {
    SKV_CHECK(!o.methods.empty() && !o.tasks.empty(), "nothing to evaluate: no methods or tasks");
    std::vector<MethodSpec> methods;
    bool needs_artifact = false, needs_token_table = false;
    for (const auto& name : o.methods) {
      methods.push_back(method_spec(name));
      needs_artifact |= methods.back().needs_artifact();
      needs_token_table |= methods.back().token_id_layer0;
    }
    for (double r : o.ratios) SKV_CHECK(r > 0 && r <= 1, "ratio ", r, " outside (0, 1]");
    SKV_CHECK_GE(o.shared_requests, 1, "--shared-requests");
    for (const auto& t : o.tasks) {
      SKV_CHECK(t == "ppl" || t == "passkey" || t == "fidelity" || t.rfind("jsonl:", 0) == 0,
                "task '", t, "' is unknown (allowed: ppl, passkey, fidelity, jsonl:FILE)");
    }
    at::manual_seed(static_cast<int64_t>(o.seed));
    Context cx{o, LlamaModel::load(o.model_dir), load_tokenizer(o.model_dir), nullptr, "", {}, {}};
    if (needs_token_table) cx.layer0_by_token = cx.model.token_kv_table(0);
    if (needs_artifact) {
      SKV_CHECK(!o.artifact.empty(),
                "methods spindle, spindle-hybrid and fp8-calibrated need --artifact");
      cx.artifact = std::make_shared<Artifact>(
          load_artifact_for_model(o.artifact, fingerprint_model(o.model_dir).to_string()));
      cx.artifact->check_geometry(cx.model.config().geometry());
    }
    {
      std::ifstream in(o.text, std::ios::binary);
      SKV_CHECK(in.good(), "cannot open text '", o.text, "'");
      cx.text.assign(std::istreambuf_iterator<char>(in), {});
    }
    if (cx.model.config().bos_token_id) cx.bos = {*cx.model.config().bos_token_id};
    const std::vector<TextSample> samples = text_samples(cx);
    auto has = [&](const std::string& t) {
      return std::find(o.tasks.begin(), o.tasks.end(), t) != o.tasks.end();
    };
    std::vector<EvalRecord> records;
    int64_t total = 0, done = 0;
    for (const auto& m : methods) {
      total += m.single_setting() ? 1 : static_cast<int64_t>(o.ratios.size());
    }
    for (const auto& m : methods) {
      // The held-out contexts, prefilled once per method (with the attention
      // rows its policy needs): the probes of the ratio search and the inputs
      // of the ppl and fidelity tasks.
      std::vector<Prefill> prefills;
      for (const auto& x : samples) {
        prefills.push_back(run_prefill(cx, x.context, rows_needed(cx, m, x.context.size())));
      }
      const std::vector<double> targets = m.single_setting() ? std::vector<double>{1.0} : o.ratios;
      for (double target : targets) {
        if (progress) progress({m.name, "", target, done, total});
        const SettingSearch search(cx, m, target);
        // Each held-out context gets its own setting; records keep their range.
        std::vector<Setting> settings;
        for (const Prefill& p : prefills) settings.push_back(search.for_prefill(p));
        const EvalRecord base = base_record(m, target);
        if (has("ppl") || has("fidelity")) {
          for (auto& r : task_ppl_and_fidelity(cx, m, base, samples, prefills, settings, has("ppl"),
                                               has("fidelity"))) {
            records.push_back(r);
          }
        }
        if (has("passkey")) records.push_back(task_passkey(cx, m, base, search));
        for (const auto& t : o.tasks) {
          if (t.rfind("jsonl:", 0) != 0) continue;
          for (auto& r : task_jsonl(cx, m, base, search, t.substr(6))) records.push_back(r);
        }
        ++done;
      }
    }
    if (progress) progress({"", "", 0, done, total});
    return records;
  });
}

}  // namespace spindlekv
