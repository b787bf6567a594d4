// `spindlekv inspect`: a readable summary of an artifact; non-zero exit when
// it does not verify (format, version, checksum, shapes, model).
#include <CLI/CLI.hpp>

#include <ATen/ATen.h>

#include <cstdio>

#include "commands.h"
#include "core/model_fingerprint.h"
#include "runtime/artifact.h"
#include "runtime/storage_cost.h"

namespace spindlekv::cli {

std::string codec_plans_text(const Artifact& a) {
  const CodecPlans& cp = a.codec_plans;
  const CodecSensitivity& s = cp.sensitivity;
  std::string out;
  auto add = [&out](const char* fmt, auto... args) {
    char buf[512];
    std::snprintf(buf, sizeof buf, fmt, args...);
    out += buf;
  };
  add("codec plans: %zu, chosen on %lld calibration contexts of %lld + %lld tokens\n",
      cp.plans.size(), static_cast<long long>(s.samples), static_cast<long long>(s.context),
      static_cast<long long>(s.continuation));
  for (const CodecPlan& p : cp.plans) {
    add("  %s: %.2f bytes per row (budget %s: %.2f), predicted KL %.4f nats per token\n",
        p.name.c_str(), p.row_bytes, p.budget_codec.c_str(), p.budget_row_bytes, p.predicted_kl);
  }
  if (s.empty()) return out;
  out += "\nKL (nats per token) when only that layer's keys or values are coded:\n\n| layer |";
  for (const char* side : {"K", "V"}) {
    for (const std::string& c : s.candidates) add(" %s %s |", side, c.c_str());
  }
  for (const CodecPlan& p : cp.plans) add(" %s K / V |", p.name.c_str());
  out += "\n|---|";
  for (size_t i = 0; i < 2 * s.candidates.size() + cp.plans.size(); ++i) out += "---|";
  out += "\n";
  for (size_t l = 0; l < s.keys.size(); ++l) {
    add("| %zu |", l);
    for (const auto* side : {&s.keys, &s.values}) {
      for (double v : (*side)[l]) add(" %.4f |", v);
    }
    for (const CodecPlan& p : cp.plans) add(" %s / %s |", p.keys[l].c_str(), p.values[l].c_str());
    out += "\n";
  }
  out += "\nbytes per coded row:";
  for (size_t c = 0; c < s.candidates.size(); ++c) {
    add(" %s %.2f%s", s.candidates[c].c_str(), s.row_bytes[c],
        c + 1 < s.candidates.size() ? "," : "\n");
  }
  return out;
}

namespace {

struct InspectOptions {
  std::string artifact;
  std::string model_dir;
  std::vector<double> ratios = {0.1, 0.2, 0.3, 0.5};
};

void run(const InspectOptions& o) {
  const Artifact a = load_artifact(o.artifact);
  std::printf("artifact        %s\n", o.artifact.c_str());
  std::printf("format          %s v%lld (written by %s)\n", kArtifactFormat,
              static_cast<long long>(kArtifactFormatVersion), a.tool_version.c_str());
  std::printf("checksum        %s (verified)\n", a.checksum.c_str());
  std::printf("model           %s\n", a.model_fingerprint.c_str());
  if (!o.model_dir.empty()) {
    a.check_model_fingerprint(fingerprint_model(o.model_dir).to_string());
    std::printf("                matches %s\n", o.model_dir.c_str());
  }
  std::printf("geometry        %lld layers, %lld heads, %lld KV heads, head_dim %lld\n",
              static_cast<long long>(a.num_layers), static_cast<long long>(a.num_heads),
              static_cast<long long>(a.num_kv_heads), static_cast<long long>(a.head_dim));
  std::printf("thresholds      keys %.3f, values %.3f\n", a.key_threshold, a.value_threshold);
  std::printf("window          %lld   gqa %s   codebooks %s   pyramid beta %.3f\n",
              static_cast<long long>(a.window), a.gqa_mode.c_str(), a.sharing.c_str(),
              a.pyramid_beta);
  std::printf("storage         %s (the dtype the budgets were planned in)\n",
              a.storage_dtype.c_str());
  if (a.layers[0].fp8_key_scale.defined()) {
    std::vector<at::Tensor> ks, vs;
    for (const ArtifactLayer& L : a.layers)
      ks.push_back(L.fp8_key_scale), vs.push_back(L.fp8_value_scale);
    const at::Tensor k = at::cat(ks), v = at::cat(vs);
    std::printf("fp8 scales      keys %.4g..%.4g, values %.4g..%.4g (max |x| / 448 per KV head)\n",
                k.min().item<double>(), k.max().item<double>(), v.min().item<double>(),
                v.max().item<double>());
  } else {
    std::printf("fp8 scales      none (fp8 caches use dynamic scales)\n");
  }
  std::printf("sources         %s\n\n", a.sources_json.c_str());
  std::printf("| layer | key entries | key coverage | value entries | value coverage |");
  for (double r : o.ratios) std::printf(" keep @ r_c %.2f (pyr / cal) |", r);
  std::printf("\n|---|---|---|---|---|");
  for (size_t i = 0; i < o.ratios.size(); ++i) std::printf("---|");
  std::printf("\n");
  int64_t shared_bytes = 0;
  for (int64_t l = 0; l < a.num_layers; ++l) {
    const ArtifactLayer& L = a.layers[l];
    int64_t ks = 0, vs = 0;
    double kc = 0, vc = 0;
    for (size_t g = 0; g < L.key_sizes.size(); ++g)
      ks += L.key_sizes[g], kc += L.key_coverage[g] / L.key_sizes.size();
    for (size_t g = 0; g < L.value_sizes.size(); ++g)
      vs += L.value_sizes[g], vc += L.value_coverage[g] / L.value_sizes.size();
    shared_bytes += (ks + vs) * storage::vector_bytes(a.head_dim, StorageDtype::kFloat32);
    std::printf("| %lld | %lld | %.3f | %lld | %.3f |", static_cast<long long>(l),
                static_cast<long long>(ks), kc, static_cast<long long>(vs), vc);
    for (double r : o.ratios) {
      std::printf(" %.2f / %.2f |", a.pyramid.at(r)[l], a.calibrated.at(r)[l]);
    }
    std::printf("\n");
  }
  std::printf("\ncodebook entries: %.1f KiB, shared by every request\n", shared_bytes / 1024.0);
  if (!a.codec_plans.plans.empty() || !a.codec_plans.sensitivity.empty()) {
    std::printf("\n%s", codec_plans_text(a).c_str());
  }
}

}  // namespace

void register_inspect_command(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* sub =
      app.add_subcommand("inspect", "Verify an artifact and print a summary (exit 2 if invalid)");
  sub->add_option("artifact", o->artifact, "Artifact (.safetensors)")->required();
  sub->add_option("--model", o->model_dir, "Model directory: also check the artifact is its");
  sub->add_option("--ratios", o->ratios, "Context ratios at which budgets are shown")
      ->delimiter(',')
      ->capture_default_str();
  sub->callback([o] { run(*o); });
}

}  // namespace spindlekv::cli
