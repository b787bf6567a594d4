#include "export/codec_sensitivity.h"

#include <ATen/ATen.h>

#include "core/error.h"
#include "model/compressed_prefill.h"
#include "model/next_token_kl.h"
#include "runtime/compressed_cache.h"
#include "runtime/eviction_policy.h"
#include "runtime/row_codec.h"

namespace spindlekv {
namespace {

constexpr const char* kProbe = "plan-probe";

// Logits [continuation, vocab] of the continuation teacher-forced through a
// cache holding the exact prefill, its rows coded as `artifact`'s probe plan
// says (or not at all without an artifact).
at::Tensor continuation_logits(const LlamaModel& model, const PrefillCapture& prefill,
                               const at::Tensor& continuation, StorageDtype dtype,
                               std::shared_ptr<const Artifact> artifact) {
  CompressionParameters p;
  p.reserve_ratio = 1.0;
  p.codebook = CodebookMode::kNone;  // exact rows, coded only by the probe
  p.storage_dtype = dtype;
  if (artifact) p.set_codec(kProbe);
  CompressedCache cache(model.config().geometry(), 1, p, artifact, model.device());
  cache.set_policy(std::make_shared<FullCachePolicy>());
  compress_prefill(prefill, cache, 0);
  return model.forward_with_cache(continuation, cache, false)[0];
}

}  // namespace

CodecSensitivity measure_codec_sensitivity(const LlamaModel& model, const Artifact& artifact,
                                           const CodecSensitivityOptions& o,
                                           const std::function<void(int64_t, int64_t)>& progress) {
  const ModelConfig& cfg = model.config();
  artifact.check_geometry(cfg.geometry());
  SKV_CHECK(!o.candidates.empty(), "codec plan: no candidate codecs");
  SKV_CHECK(!o.sequences.empty(), "codec plan: no calibration sequences");
  const int64_t total = static_cast<int64_t>(o.sequences[0].size());
  SKV_CHECK(o.context > 0 && total > o.context, "codec plan: sequences of ", total,
            " tokens leave no continuation after a ", o.context, "-token context");
  SKV_CHECK_LE(total, cfg.max_position_embeddings,
               "codec plan: sequence tokens exceed the model's context");
  const int64_t samples = static_cast<int64_t>(o.sequences.size());
  CodecSensitivity s;
  s.candidates = o.candidates;
  s.samples = samples;
  s.context = o.context;
  s.continuation = total - o.context;
  const int64_t L = cfg.num_layers, C = static_cast<int64_t>(o.candidates.size());
  for (const std::string& c : o.candidates) {
    with_context("codec plan candidate '" + c + "'", [&] {
      const auto codec = parse_row_codec(c);
      SKV_CHECK(codec && !codec->needs_artifact(), "a candidate is a row codec without tables");
      RowCodecContext ctx;
      ctx.kv_heads = cfg.num_kv_heads;
      ctx.head_dim = cfg.head_dim;
      ctx.dtype = o.dtype;
      s.row_bytes.push_back(coded_row_bytes(*codec->bind(ctx)));
    });
  }
  s.keys.assign(L, std::vector<double>(C, 0.0));
  s.values.assign(L, std::vector<double>(C, 0.0));
  CodecPlan probe;
  probe.name = kProbe;
  auto probe_artifact = std::make_shared<Artifact>(artifact);
  for (int64_t i = 0; i < samples; ++i) {
    const std::vector<int64_t>& seq = o.sequences[i];
    SKV_CHECK_EQ(static_cast<int64_t>(seq.size()), total, "codec plan: sequence ", i, " tokens");
    const std::vector<int64_t> context(seq.begin(), seq.begin() + o.context);
    const at::Tensor cont_t =
        at::tensor(std::vector<int64_t>(seq.begin() + o.context, seq.end()), at::kLong)
            .view({1, -1});
    const PrefillCapture prefill = capture_prefill(model, context, 0);
    const at::Tensor ref = continuation_logits(model, prefill, cont_t, o.dtype, nullptr);
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t c = 0; c < C; ++c) {
        for (const KvSide side : {KvSide::kKeys, KvSide::kValues}) {
          probe.keys.assign(L, "none");
          probe.values.assign(L, "none");
          (side == KvSide::kKeys ? probe.keys : probe.values)[l] = o.candidates[c];
          probe_artifact->codec_plans.plans = {probe};
          const at::Tensor got =
              continuation_logits(model, prefill, cont_t, o.dtype, probe_artifact);
          const double kl = next_token_kl(ref, got).mean().item<double>();
          (side == KvSide::kKeys ? s.keys : s.values)[l][c] += kl / static_cast<double>(samples);
        }
      }
      if (progress) progress(i * L + l + 1, samples * L);
    }
  }
  return s;
}

}  // namespace spindlekv
