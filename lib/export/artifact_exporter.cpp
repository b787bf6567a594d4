#include "export/artifact_exporter.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "capture/capture_file.h"
#include "capture/text_source.h"
#include "core/error.h"
#include "core/model_fingerprint.h"
#include "core/version.h"
#include "export/codec_planner.h"
#include "export/codec_sensitivity.h"
#include "model/tokenizer.h"
#include "runtime/row_codec.h"
#include "train/codebook_file.h"

namespace spindlekv {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(BudgetCalibrationParameters, context_ratios, pyramid_beta,
                                   slot_overhead_bytes, element_bytes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CodecPlanOptions, bits, candidates, text, samples, context,
                                   continuation)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ExportOptions, codebooks, capture, out, model_dir, gqa_mode,
                                   window, kv_dtype, budgets, plans, overwrite)

std::string export_options_json(const ExportOptions& options) {
  return nlohmann::json(options).dump();
}
namespace {

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

ArtifactLayer to_artifact_layer(const LayerCodebooks& L) {
  ArtifactLayer out;
  out.key_codebook = L.keys.codewords.to(at::kFloat).contiguous();
  out.value_codebook = L.values.codewords.to(at::kFloat).contiguous();
  out.key_sizes = L.keys.sizes;
  out.value_sizes = L.values.sizes;
  out.key_coverage = L.keys.heldout_coverage;
  out.value_coverage = L.values.heldout_coverage;
  return out;
}

// "2.5" for 2.5, "3" for 3: the suffix of plan and tq names.
std::string bits_text(double b) {
  std::ostringstream s;
  s << b;
  return s.str();
}

// The codec plans of `o.plans` for artifact `a` (its layers and budgets set).
CodecPlans make_codec_plans(const ExportOptions& o, const Artifact& a,
                            const std::vector<std::string>& capture_text,
                            const std::function<void(const std::string&)>& log) {
  const CodecPlanOptions& po = o.plans;
  SKV_CHECK(!o.model_dir.empty(),
            "codec plans (--plan-bits) are measured on the model: give --model");
  SKV_CHECK_GT(po.samples, 0, "--plan-samples");
  SKV_CHECK(po.context > 1 && po.continuation > 0, "--plan-context ", po.context,
            " and --plan-continuation ", po.continuation, " must be positive");
  const LlamaModel model = LlamaModel::load(o.model_dir);
  const auto tokenizer = load_tokenizer(o.model_dir);
  CodecSensitivityOptions so;
  so.candidates = po.candidates;
  so.context = po.context;
  so.dtype = parse_storage_dtype(o.kv_dtype);
  // Every sequence of the text, then `samples` of them evenly spaced.
  const std::vector<std::string> text = po.text.empty() ? capture_text : po.text;
  SKV_CHECK(!text.empty(), "codec plans need calibration text: give --plan-text");
  TextSource source(text);
  TokenSequencer sequencer(*tokenizer, po.context + po.continuation);
  std::vector<std::vector<int64_t>> all;
  TextDocument doc;
  std::vector<int64_t> seq;
  while (source.next(&doc)) {
    sequencer.add_document(doc.text);
    while (sequencer.next_sequence(&seq)) all.push_back(seq);
  }
  SKV_CHECK_GE(static_cast<int64_t>(all.size()), po.samples, "codec plans: the calibration text ",
               "holds ", all.size(), " sequences of ", po.context + po.continuation,
               " tokens, fewer than --plan-samples");
  for (int64_t i = 0; i < po.samples; ++i) {
    so.sequences.push_back(all[static_cast<size_t>(i) * all.size() / po.samples]);
  }
  if (log) {
    log("codec plans: measuring " + std::to_string(po.candidates.size()) + " codecs on " +
        std::to_string(a.num_layers) + " layers x K/V over " + std::to_string(po.samples) +
        " calibration contexts");
  }
  CodecPlans out;
  out.sensitivity = measure_codec_sensitivity(model, a, so, [&](int64_t done, int64_t total) {
    if (log && (done == total || done % a.num_layers == 0)) {
      log("codec plans: " + std::to_string(done) + " / " + std::to_string(total) +
          " (context, layer) measured");
    }
  });
  for (double b : po.bits) {
    const std::string budget = "tq" + bits_text(b);
    const double budget_bytes = with_context("--plan-bits " + bits_text(b), [&] {
      RowCodecContext c;
      c.kv_heads = a.num_kv_heads;
      c.head_dim = a.head_dim;
      c.dtype = so.dtype;
      return coded_row_bytes(*parse_row_codec(budget)->bind(c));
    });
    out.plans.push_back(plan_codecs(out.sensitivity, "plan" + bits_text(b), budget, budget_bytes));
  }
  return out;
}

}  // namespace

ExportResult run_export(const ExportOptions& o,
                        const std::function<void(const std::string&)>& log) {
  return with_context("export to '" + o.out + "'", [&] {
    SKV_CHECK(!o.codebooks.empty() && !o.capture.empty() && !o.out.empty(),
              "export needs --codebooks, --capture and --out");
    if (!o.overwrite && std::filesystem::exists(o.out)) {
      SKV_THROW(kInvalidInput, "output '", o.out, "' exists (use --overwrite to replace it)");
    }
    SKV_CHECK(o.gqa_mode == "repeat" || o.gqa_mode == "average", "gqa mode '", o.gqa_mode,
              "' (allowed: repeat, average)");
    const CodebookFile books = read_codebook_file(o.codebooks);
    CaptureReader capture(o.capture);
    const CaptureMetadata& cm = capture.metadata();
    SKV_CHECK(capture.finished(), "capture '", o.capture, "' is not finished (resume it first)");
    SKV_CHECK(books.metadata.model_fingerprint == cm.model_fingerprint, "codebooks '", o.codebooks,
              "' come from model ", books.metadata.model_fingerprint, " but capture '", o.capture,
              "' from ", cm.model_fingerprint);
    SKV_CHECK(books.metadata.calibration_hash == cm.calibration_hash, "codebooks '", o.codebooks,
              "' were trained on other calibration text (hash ", books.metadata.calibration_hash,
              ") than capture '", o.capture, "' (", cm.calibration_hash, ")");
    if (!o.model_dir.empty()) {
      const std::string fp = fingerprint_model(o.model_dir).to_string();
      SKV_CHECK(fp == cm.model_fingerprint, "capture '", o.capture, "' was made with another ",
                "model (fingerprint ", cm.model_fingerprint, ") than '", o.model_dir, "' (", fp,
                ")");
    }
    SKV_CHECK_EQ(static_cast<int64_t>(cm.layers.size()), cm.num_layers,
                 "the capture must hold every layer for an artifact (it has ", cm.layers.size(),
                 " of ", cm.num_layers, "; capture with --layers all)");

    Artifact a;
    a.tool_version = version_string();
    a.model_fingerprint = cm.model_fingerprint;
    a.num_layers = cm.num_layers;
    a.num_heads = cm.num_heads;
    a.num_kv_heads = cm.num_kv_heads;
    a.head_dim = cm.head_dim;
    a.key_threshold = books.metadata.key_threshold;
    a.value_threshold = books.metadata.value_threshold;
    a.window = o.window > 0 ? o.window : cm.window;
    a.gqa_mode = o.gqa_mode;
    a.sharing = books.metadata.sharing;
    a.pyramid_beta = o.budgets.pyramid_beta;
    const StorageDtype dtype = parse_storage_dtype(o.kv_dtype);
    a.storage_dtype = to_string(dtype);
    // The budgets are planned with the storage dtype's cost model; the
    // artifact records the parameters as used, not the float32 defaults.
    ExportOptions used = o;
    used.budgets.slot_overhead_bytes = storage::coded_slot_bytes(dtype);
    used.budgets.element_bytes = storage::element_bytes(dtype);
    a.sources_json = nlohmann::json{{"codebooks", o.codebooks},
                                    {"capture", o.capture},
                                    {"calibration_hash", cm.calibration_hash},
                                    {"options", nlohmann::json::parse(export_options_json(used))}}
                         .dump();
    std::vector<LayerBudgetInput> inputs;
    for (int64_t l = 0; l < cm.num_layers; ++l) {
      with_context("layer " + std::to_string(l), [&] {
        const LayerCodebooks& L = books.layer(l);
        a.layers.push_back(to_artifact_layer(L));
        // fp8 scales (vLLM's calibrated per-tensor scheme, per KV head):
        // max |x| over every captured vector, over the e4m3 maximum.
        at::Tensor kmax = at::zeros({cm.num_kv_heads}, at::kFloat), vmax = kmax.clone();
        const int64_t n = capture.vector_count(l), chunk = 65536;
        for (int64_t start = 0; start < n; start += chunk) {
          const int64_t c = std::min(chunk, n - start);
          kmax =
              at::maximum(kmax, capture.read_keys(l, start, c).abs().amax({0, 2}).to(at::kFloat));
          vmax =
              at::maximum(vmax, capture.read_values(l, start, c).abs().amax({0, 2}).to(at::kFloat));
        }
        a.layers.back().fp8_key_scale = at::where(kmax > 0, kmax / 448.0, at::ones_like(kmax));
        a.layers.back().fp8_value_scale = at::where(vmax > 0, vmax / 448.0, at::ones_like(vmax));
        // Retained mass averaged over sequences and query heads.
        at::Tensor mass = capture.read_statistic(l, "retained_mass");  // [S, heads, F]
        SKV_CHECK(mass.dim() == 3 && mass.size(0) > 0 &&
                      mass.size(2) == static_cast<int64_t>(cm.keep_fractions.size()),
                  "capture statistic retained_mass has shape ", mass.sizes());
        at::Tensor curve = mass.mean(at::IntArrayRef{0, 1}).contiguous();
        LayerBudgetInput in;
        in.keep_fractions = cm.keep_fractions;
        in.retained_mass.assign(curve.data_ptr<double>(), curve.data_ptr<double>() + curve.numel());
        in.key_coverage = mean(L.keys.heldout_coverage);
        in.value_coverage = mean(L.values.heldout_coverage);
        inputs.push_back(std::move(in));
      });
    }
    ExportResult result;
    result.budgets = calibrate_budgets(inputs, a.head_dim, used.budgets);
    a.pyramid = result.budgets.pyramid;
    a.calibrated = result.budgets.calibrated;
    if (!o.plans.bits.empty()) {
      std::vector<std::string> capture_text;
      try {
        capture_text =
            nlohmann::json::parse(cm.calibration_sources_json).get<std::vector<std::string>>();
      } catch (const nlohmann::json::exception&) {
        capture_text.clear();  // an older capture: --plan-text must say
      }
      a.codec_plans =
          with_context("codec plans", [&] { return make_codec_plans(o, a, capture_text, log); });
    }
    save_artifact(o.out, a);
    result.artifact = std::move(a);
    return result;
  });
}

}  // namespace spindlekv
