// `spindlekv export`: stage 3, codebooks + capture statistics -> artifact.
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <cstdio>

#include "commands.h"
#include "core/threads.h"
#include "export/artifact_exporter.h"
#include "yaml_options.h"

namespace spindlekv::cli {
namespace {

struct ExportCommandOptions {
  std::string config_path;
  int threads = 0;
  ExportOptions exporter;
};

std::string fractions_text(const std::vector<double>& f) {
  std::string s;
  for (size_t i = 0; i < f.size(); ++i) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%s%.2f", i ? " " : "", f[i]);
    s += buf;
  }
  return s;
}

void run(CLI::App& sub, ExportCommandOptions& o) {
  apply_yaml_config(sub, o.config_path);
  configure_threads(o.threads);
  const ExportResult r =
      run_export(o.exporter, [](const std::string& line) { spdlog::info("{}", line); });
  const BudgetCalibration& b = r.budgets;
  std::printf("relative bytes per kept token, by layer: %s\n\n",
              fractions_text(b.relative_token_cost).c_str());
  std::printf(
      "| r_c | pyramid keep by layer | calibrated keep by layer | est. bytes | retained mass "
      "pyramid | retained mass calibrated |\n|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < b.pyramid.context_ratios.size(); ++i) {
    std::printf("| %.2f | %s | %s | %.3f | %.3f | %.3f |\n", b.pyramid.context_ratios[i],
                fractions_text(b.pyramid.fractions[i]).c_str(),
                fractions_text(b.calibrated.fractions[i]).c_str(), b.pyramid_bytes[i],
                b.pyramid_mass[i], b.calibrated_mass[i]);
  }
  if (!r.artifact.codec_plans.plans.empty())
    std::printf("\n%s", codec_plans_text(r.artifact).c_str());
  spdlog::info("wrote {} (checksum {})", o.exporter.out, r.artifact.checksum);
}

}  // namespace

void register_export_command(CLI::App& app) {
  auto o = std::make_shared<ExportCommandOptions>();
  ExportOptions& e = o->exporter;
  CLI::App* sub = app.add_subcommand(
      "export", "Stage 3: write codebooks and layer budgets into one artifact bound to the model");
  add_config_option(*sub, o->config_path);
  sub->add_option("--codebooks", e.codebooks, "Codebook file from `spindlekv train`")->required();
  sub->add_option("--capture", e.capture, "The capture the codebooks were trained on")->required();
  sub->add_option("--out", e.out, "Output artifact (.safetensors)")->required();
  sub->add_option("--model", e.model_dir, "Model directory: refuse inputs of another model");
  sub->add_option("--gqa", e.gqa_mode, "Default GQA handling: repeat (the paper) or average")
      ->capture_default_str();
  sub->add_option("--kv-dtype", e.kv_dtype,
                  "Cache storage dtype the budgets are planned for: float32, float16, bfloat16")
      ->check(CLI::IsMember({"float32", "float16", "bfloat16"}))
      ->capture_default_str();
  sub->add_option("--window", e.window, "Observation window (0: the capture's)")
      ->capture_default_str();
  sub->add_option("--ratios", e.budgets.context_ratios, "Context ratios tabulated in the budgets")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--beta", e.budgets.pyramid_beta, "Pyramid's smallest per-layer ratio")
      ->capture_default_str();
  sub->add_option("--plan-bits", e.plans.bits,
                  "Codec plans to calibrate: plan<b> stays within tq<b>'s bytes (needs --model)")
      ->delimiter(',');
  sub->add_option("--plan-candidates", e.plans.candidates, "Row codecs a plan chooses from")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--plan-text", e.plans.text,
                  "Calibration text of the plans (default: the capture's)");
  sub->add_option("--plan-samples", e.plans.samples, "Calibration contexts of the plans")
      ->capture_default_str();
  sub->add_option("--plan-context", e.plans.context, "Tokens prefilled per plan context")
      ->capture_default_str();
  sub->add_option("--plan-continuation", e.plans.continuation,
                  "Tokens scored after each plan context")
      ->capture_default_str();
  sub->add_option("--threads", o->threads, "Threads (0: every core)")->capture_default_str();
  sub->add_flag("--overwrite", e.overwrite, "Replace an existing output");
  sub->callback([sub, o] { run(*sub, *o); });
}

}  // namespace spindlekv::cli
