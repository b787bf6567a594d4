// Internal to lib/eval: what the evaluation's tasks share (the loaded model
// and options, the caches they build, the ratio search, memory statistics).
// Not installed; include only from lib/eval/*.cpp.
#pragma once

#include <ATen/Tensor.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "eval/compression_eval.h"
#include "eval/eval_methods.h"
#include "eval/ruler_tasks.h"
#include "model/compressed_prefill.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "runtime/artifact.h"

namespace spindlekv {
namespace eval_detail {

using Clock = std::chrono::steady_clock;
inline double since(Clock::time_point t0) {
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

/// The method's cache with setting `s`, holding layer 0 as token ids for "+l0".
std::unique_ptr<CompressedCache> make_cache(const Context& cx, const MethodSpec& m,
                                            const Setting& s, int64_t batch = 1);

// A prefill's captured K/V and attention, to compress many times.
using Prefill = PrefillCapture;

Prefill run_prefill(const Context& cx, const std::vector<int64_t>& prompt, int64_t rows);
/// Compresses `p` into sequence 0 of `cache`; returns the seconds it took.
double compress(const Prefill& p, CompressedCache& cache);
int64_t rows_needed(const Context& cx, const MethodSpec& m, int64_t tokens);
/// The knob setting whose measured ratio on the probe is closest to `target`.
Setting find_setting(const Context& cx, const MethodSpec& m, double target, const Prefill& probe);

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

/// Held-out contexts and continuations, evenly spaced through the text.
std::vector<TextSample> text_samples(const Context& cx);
EvalRecord base_record(const MethodSpec& m, double target);
/// A proportion from per-prompt outcomes: its value, n and Wilson interval.
void set_outcomes(EvalRecord& r, std::vector<int> outcomes);

// Per-prompt memory and settings of one method x ratio x task, averaged.
class PromptStats {
 public:
  explicit PromptStats(const Context& cx) : cx_(cx) {}
  void add(const CompressedCache& c, double seconds, const Setting& s) {
    const MemoryReport m = c.memory();
    const int64_t N = cx_.o.shared_requests;
    held_ += m.held_bytes, full_ += m.full_bytes, total_ += m.shared_bytes_total;
    charged_ +=
        shared_bytes_per_request(static_cast<double>(m.shared_bytes_total), static_cast<double>(N));
    prompt_ratios_.push_back(m.ratio_shared_by(N));
    ratio_ += prompt_ratios_.back(), excluding_ += m.ratio_excluding_shared;
    ratio_n1_ += m.ratio_shared_by(1), ratio_n16_ += m.ratio_shared_by(16);
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
    m.ratio_n1 = ratio_n1_ / n, m.ratio_n16 = ratio_n16_ / n;
    m.shared_requests = cx_.o.shared_requests;
    r.prompt_ratios = prompt_ratios_;
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
         compress_ = 0, ratio_n1_ = 0, ratio_n16_ = 0;
  std::vector<double> prompt_ratios_;
  std::vector<double> kept_;
  EvalSettings settings_;
};

// The tasks (eval_tasks.cpp, ruler_eval.cpp).
std::vector<EvalRecord> task_ppl_and_fidelity(const Context& cx, const MethodSpec& m,
                                              const EvalRecord& base,
                                              const std::vector<TextSample>& samples,
                                              const std::vector<Prefill>& prefills,
                                              const std::vector<Setting>& settings, bool ppl,
                                              bool kl, bool fidelity);
EvalRecord task_passkey(const Context& cx, const MethodSpec& m, const EvalRecord& base,
                        const SettingSearch& search);
std::vector<EvalRecord> task_jsonl(const Context& cx, const MethodSpec& m, const EvalRecord& base,
                                   const SettingSearch& search, const std::string& path);
std::vector<EvalRecord> task_ruler(const Context& cx, const MethodSpec& m, const EvalRecord& base,
                                   const SettingSearch& search,
                                   const std::vector<RulerSample>& samples,
                                   const std::vector<std::string>& protocols);

}  // namespace eval_detail
}  // namespace spindlekv
