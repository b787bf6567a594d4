// `spindlekv model-report MODEL_DIR`: what a (byte-level) model can do with a
// full cache: pass-key and multi-key retrieval accuracy, held-out bits per
// byte, and the attention structure SpindleKV relies on, per layer.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "capture/attention_statistics.h"
#include "commands.h"
#include "core/atomic_file.h"
#include "core/blas_kernels.h"
#include "core/error.h"
#include "core/threads.h"
#include "eval/retrieval_eval.h"
#include "model/llama_model.h"
#include "model/lm_trainer.h"
#include "runtime/paper_defaults.h"
#include "yaml_options.h"

namespace spindlekv::cli {
namespace {

struct ModelReportOptions {
  std::string config_path;
  std::string model_dir;
  std::string heldout = "calibration/heldout.txt";  ///< bits per byte and filler text
  std::vector<int64_t> lengths = {256, 512, 768, 1024};
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t trials_per_cell = 10;
  int64_t multikey_pairs = 4;
  int64_t window = paper::kWindow;  ///< observation window (last queries) for attention statistics
  int64_t attention_sequences = 4;
  uint64_t seed = 7;
  std::string out;  ///< JSON report (optional)
  int threads = 0;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void run(CLI::App& sub, ModelReportOptions& o) {
  apply_yaml_config(sub, o.config_path);
  configure_threads(o.threads);
  spdlog::info("compute: {}", compute_environment());
  c10::InferenceMode guard;
  LlamaModel model = LlamaModel::load(o.model_dir);
  const ModelConfig& c = model.config();
  SKV_CHECK(c.bos_token_id.has_value(), "model-report needs a bos_token_id in config.json");
  const int64_t bos = *c.bos_token_id;
  const std::string text = with_context("reading --heldout", [&] { return read_file(o.heldout); });
  FillerText filler(text);
  nlohmann::ordered_json report;
  report["model"] = o.model_dir;
  report["heldout"] = o.heldout;

  const int64_t ctx = std::min<int64_t>(c.max_position_embeddings, 1024);
  const double bpb =
      bits_per_byte(model, text.substr(0, std::min<size_t>(text.size(), 64 * ctx)), ctx, bos);
  report["heldout_bits_per_byte"] = bpb;
  std::cout << "held-out bits per byte (" << ctx << "-byte windows): " << fmt("%.3f", bpb)
            << "\n\n";

  RetrievalGrid grid;
  grid.lengths = o.lengths;
  grid.depths = o.depths;
  grid.trials_per_cell = o.trials_per_cell;
  grid.seed = o.seed;
  grid.tasks.multikey_pairs = o.multikey_pairs;
  auto generate = [&](const std::vector<int64_t>& prompt, int64_t n) {
    return model.generate_greedy(prompt, n);
  };
  for (RetrievalTask task : {RetrievalTask::kPasskey, RetrievalTask::kMultikey}) {
    RetrievalResult r = evaluate_retrieval(task, filler, grid, bos, generate);
    const std::string name = retrieval_task_name(task);
    std::cout << name << " accuracy: " << fmt("%.3f", r.accuracy()) << " over " << r.trials()
              << " trials\n| length \\ depth |";
    for (double d : o.depths) std::cout << " " << d << " |";
    std::cout << "\n|---|";
    for (size_t i = 0; i < o.depths.size(); ++i) std::cout << "---|";
    std::cout << "\n";
    nlohmann::ordered_json cells = nlohmann::ordered_json::array();
    for (size_t i = 0; i < r.cells.size(); ++i) {
      const RetrievalCell& cell = r.cells[i];
      if (i % o.depths.size() == 0) std::cout << "| " << cell.length << " |";
      std::cout << " " << cell.correct << "/" << cell.trials << " |";
      if ((i + 1) % o.depths.size() == 0) std::cout << "\n";
      cells.push_back({{"length", cell.length},
                       {"depth", cell.depth},
                       {"trials", cell.trials},
                       {"correct", cell.correct}});
    }
    std::cout << "\n";
    report[name] = {{"accuracy", r.accuracy()}, {"trials", r.trials()}, {"cells", cells}};
  }

  // Attention structure on held-out windows of the full context.
  AttentionStatisticsParameters sp;
  std::mt19937_64 rng(o.seed);
  std::vector<std::vector<LayerAttentionStatistics>> per_seq;
  for (int64_t s = 0; s < o.attention_sequences; ++s) {
    std::string w = filler.window(rng, static_cast<size_t>(ctx - 1));
    std::vector<int64_t> ids = {bos};
    for (unsigned char ch : w) ids.push_back(ch);
    ForwardCapture cap;
    cap.attention_rows = o.window;
    model.forward(at::tensor(ids, at::kLong).view({1, -1}), nullptr, &cap);
    std::vector<LayerAttentionStatistics> layers;
    for (const auto& L : cap.out)
      layers.push_back(compute_attention_statistics(L.attention, L.keys_pre_rope, L.values, sp));
    per_seq.push_back(std::move(layers));
  }
  size_t keep20 = 0;
  while (keep20 + 1 < sp.keep_fractions.size() && sp.keep_fractions[keep20] < 0.2) ++keep20;
  std::cout << "attention structure (" << o.attention_sequences << " held-out sequences of " << ctx
            << " tokens, last " << o.window << " queries; mean over heads)\n"
            << "| layer | mass on first " << sp.sink_tokens
            << " tokens | tokens for 90% of a row's mass | mass kept at 20% (SnapKV selection) | "
            << "key pairs > " << sp.key_threshold << " | value pairs > " << sp.value_threshold
            << " |\n|---|---|---|---|---|---|\n";
  nlohmann::ordered_json layers_json = nlohmann::ordered_json::array();
  for (int64_t l = 0; l < c.num_layers; ++l) {
    double sink = 0, f90 = 0, kept = 0, kp = 0, vp = 0, n = 0, nk = 0;
    for (const auto& seq : per_seq) {
      for (const auto& h : seq[l].heads) {
        sink += h.sink_mass;
        f90 += h.fraction_for_90_percent;
        kept += h.retained_mass[keep20];
        ++n;
      }
      for (size_t g = 0; g < seq[l].key_pair_fraction.size(); ++g) {
        kp += seq[l].key_pair_fraction[g];
        vp += seq[l].value_pair_fraction[g];
        ++nk;
      }
    }
    sink /= n, f90 /= n, kept /= n, kp /= nk, vp /= nk;
    std::cout << "| " << l << " | " << fmt("%.3f", sink) << " | " << fmt("%.1f", f90 * ctx) << " ("
              << fmt("%.1f%%", 100 * f90) << ") | " << fmt("%.3f", kept) << " | " << fmt("%.4f", kp)
              << " | " << fmt("%.4f", vp) << " |\n";
    layers_json.push_back({{"layer", l},
                           {"sink_mass", sink},
                           {"fraction_for_90_percent", f90},
                           {"tokens_for_90_percent", f90 * ctx},
                           {"retained_mass_at_20_percent", kept},
                           {"key_pairs_above_" + fmt("%.2f", sp.key_threshold), kp},
                           {"value_pairs_above_" + fmt("%.2f", sp.value_threshold), vp}});
  }
  report["attention"] = layers_json;
  if (!o.out.empty()) write_file_atomically(o.out, report.dump(2) + "\n");
}

}  // namespace

void register_model_report_command(CLI::App& app) {
  auto o = std::make_shared<ModelReportOptions>();
  CLI::App* sub = app.add_subcommand(
      "model-report",
      "Retrieval accuracy, held-out bits per byte and attention structure of a byte-level model");
  add_config_option(*sub, o->config_path);
  sub->add_option("model_dir", o->model_dir, "Model directory")->required();
  sub->add_option("--heldout", o->heldout, "Held-out text (also the filler of retrieval samples)")
      ->capture_default_str();
  sub->add_option("--lengths", o->lengths, "Prompt lengths in tokens")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--depths", o->depths, "Insertion depths (0..1)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--trials-per-cell", o->trials_per_cell, "Trials per length x depth")
      ->capture_default_str();
  sub->add_option("--multikey-pairs", o->multikey_pairs, "Facts per multi-key sample")
      ->capture_default_str();
  sub->add_option("--window", o->window, "Observation window for attention statistics")
      ->capture_default_str();
  sub->add_option("--attention-sequences", o->attention_sequences,
                  "Sequences for attention statistics")
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of the samples")->capture_default_str();
  sub->add_option("--out", o->out, "Write the report as JSON here");
  sub->add_option("--threads", o->threads, "Intra-op threads (0: every core)")
      ->capture_default_str();
  sub->callback([sub, o] { run(*sub, *o); });
}

}  // namespace spindlekv::cli
