#include <ATen/ATen.h>

#include <fstream>

#include "core/error.h"
#include "eval/detail/eval_context.h"
#include "eval/statistics.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {
namespace eval_detail {

std::unique_ptr<CompressedCache> make_cache(const Context& cx, const MethodSpec& m,
                                            const Setting& s, int64_t batch) {
  CompressionParameters p;
  p.reserve_ratio = s.reserve;
  p.budget = m.budget;
  p.window = cx.o.window;
  p.gqa = m.gqa;
  p.codebook = m.codebook;
  p.key_threshold = s.key_threshold;
  p.value_threshold = s.value_threshold;
  p.storage_dtype = parse_storage_dtype(cx.o.kv_dtype);
  if (!m.codec.empty()) p.set_codec(m.codec);
  auto cache = std::make_unique<CompressedCache>(cx.model.config().geometry(), batch, p,
                                                 m.needs_artifact() ? cx.artifact : nullptr,
                                                 cx.model.device());
  cache->set_policy(m.make_policy());
  if (m.token_id_layer0) {
    cache->hold_as_token_ids(0, cx.layer0_by_token.first, cx.layer0_by_token.second);
  }
  return cache;
}

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

namespace {

// Measured ratio of `m` with setting `s` on the probe prefill.
double probe_ratio(const Context& cx, const MethodSpec& m, const Setting& s, const Prefill& probe) {
  auto cache = make_cache(cx, m, s);
  compress(probe, *cache);
  return cache->memory().ratio_shared_by(cx.o.shared_requests);
}

}  // namespace

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

}  // namespace eval_detail
}  // namespace spindlekv
