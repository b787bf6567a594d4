// `spindlekv model-report MODEL_DIR`: what a model can do with a full cache:
// pass-key and multi-key retrieval and RULER tasks over a length x depth
// grid, held-out bits per byte (comparable across tokenizers), and the
// attention structure SpindleKV relies on, per layer.
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
#include "eval/ruler_tasks.h"
#include "model/llama_model.h"
#include "model/lm_trainer.h"
#include "model/tokenizer.h"
#include "runtime/paper_defaults.h"
#include "yaml_options.h"

namespace spindlekv::cli {
namespace {

struct ModelReportOptions {
  std::string config_path;
  std::string model_dir;
  std::string heldout = "calibration/heldout.txt";  ///< bits per byte and filler text
  std::string heldout_modern;  ///< a second held-out text (bits per byte only); optional
  /// Prompt lengths in tokens; empty: a quarter, half, three quarters and all
  /// of the model's context (at most 4096).
  std::vector<int64_t> lengths;
  /// RULER tasks run over the same grid (depths from the sample index, as in RULER).
  std::vector<std::string> ruler_tasks = {"niah_single", "niah_multikey", "vt"};
  std::string ruler_words = "/usr/share/dict/words";
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
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(o.model_dir);
  const bool bytes = tok->name() == "byte";
  const std::string text = with_context("reading --heldout", [&] { return read_file(o.heldout); });
  FillerText filler(text);
  nlohmann::ordered_json report;
  report["model"] = o.model_dir;
  report["tokenizer"] = tok->name();
  report["heldout"] = o.heldout;

  // Attention statistics and bits per byte use windows of the full context
  // (up to 2048 tokens).
  const int64_t ctx = std::min<int64_t>(c.max_position_embeddings, 2048);
  auto bpb_of = [&](const std::string& t) { return bits_per_byte(model, *tok, t, ctx, 64); };
  const double bpb = bpb_of(text);
  report["heldout_bits_per_byte"] = bpb;
  std::cout << "held-out bits per byte (" << o.heldout << ", " << ctx
            << "-token windows): " << fmt("%.3f", bpb) << "\n";
  if (!o.heldout_modern.empty()) {
    const double m = bpb_of(
        with_context("reading --heldout-modern", [&] { return read_file(o.heldout_modern); }));
    report["heldout_modern"] = o.heldout_modern;
    report["heldout_modern_bits_per_byte"] = m;
    std::cout << "held-out bits per byte (" << o.heldout_modern << "): " << fmt("%.3f", m) << "\n";
  }
  std::cout << "\n";

  std::vector<int64_t> lengths = o.lengths;
  if (lengths.empty()) {
    const int64_t full = std::min<int64_t>(c.max_position_embeddings, 4096);
    for (int q = 1; q <= 4; ++q) lengths.push_back(full * q / 4);
  }
  // One table per task: rows are lengths, columns depths (or one column
  // when the task does not place its needle), cells correct/trials.
  auto print_grid = [&](const std::string& name, double score, int64_t trials,
                        const std::vector<RetrievalCell>& cells, bool by_depth) {
    const size_t columns = by_depth ? o.depths.size() : 1;
    std::cout << name << ": " << fmt("%.3f", score) << " over " << trials << " trials\n| length |";
    if (by_depth) {
      for (double d : o.depths) std::cout << " depth " << d << " |";
    } else {
      std::cout << " all depths |";
    }
    std::cout << "\n|---|";
    for (size_t i = 0; i < columns; ++i) std::cout << "---|";
    std::cout << "\n";
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (size_t i = 0; i < cells.size(); ++i) {
      const RetrievalCell& cell = cells[i];
      if (i % columns == 0) std::cout << "| " << cell.length << " |";
      std::cout << " " << cell.correct << "/" << cell.trials << " |";
      if ((i + 1) % columns == 0) std::cout << "\n";
      out.push_back({{"length", cell.length},
                     {"depth", by_depth ? nlohmann::ordered_json(cell.depth) : nullptr},
                     {"trials", cell.trials},
                     {"correct", cell.correct}});
    }
    std::cout << "\n";
    return out;
  };

  RetrievalGrid grid;
  grid.lengths = lengths;
  grid.depths = o.depths;
  grid.trials_per_cell = o.trials_per_cell;
  grid.seed = o.seed;
  grid.tasks.multikey_pairs = o.multikey_pairs;
  auto generate = [&](const std::vector<int64_t>& prompt, int64_t n) {
    return model.generate_greedy(prompt, n);
  };
  for (RetrievalTask task : {RetrievalTask::kPasskey, RetrievalTask::kMultikey}) {
    RetrievalResult r =
        evaluate_retrieval(task, filler, grid, bos, generate, bytes ? nullptr : tok.get());
    const std::string name = retrieval_task_name(task);
    auto cells = print_grid(name + " accuracy", r.accuracy(), r.trials(), r.cells, true);
    report[name] = {{"accuracy", r.accuracy()}, {"trials", r.trials()}, {"cells", cells}};
  }

  // RULER tasks. A NIAH sample with index i sits at depth (i mod 5) / 4, as
  // in RULER, so each cell draws the indices of its depth; the other tasks
  // do not place a needle at a chosen depth and get one cell per length. A
  // trial counts as correct when every expected string is found.
  if (o.ruler_tasks == std::vector<std::string>{"none"}) o.ruler_tasks.clear();
  if (!o.ruler_tasks.empty()) {
    for (const std::string& task : o.ruler_tasks) {
      SKV_CHECK(is_ruler_task(task), "--ruler-tasks: unknown RULER task '", task, "'");
    }
    RulerResources res;
    res.words = load_word_list(o.ruler_words);
    for (const std::string& task : o.ruler_tasks) {
      const bool by_depth = task.rfind("niah", 0) == 0;
      std::vector<int64_t> depth_slot;  // index mod 5 of each grid depth
      for (double d : o.depths) {
        const int64_t k = std::lround(d * 4);
        SKV_CHECK(!by_depth || (std::abs(d * 4 - k) < 1e-9 && k >= 0 && k <= 4), "--depths ", d,
                  ": RULER's NIAH needles sit at depths 0, 0.25, 0.5, 0.75 and 1");
        depth_slot.push_back(k);
      }
      const size_t columns = by_depth ? o.depths.size() : 1;
      const int64_t per_cell =
          by_depth ? o.trials_per_cell : o.trials_per_cell * static_cast<int64_t>(o.depths.size());
      std::vector<RetrievalCell> cells;
      double score_sum = 0;
      int64_t trials = 0;
      for (int64_t length : lengths) {
        try {
          make_ruler_sample(task, *tok, length, 0, o.seed, res);
        } catch (const Error& e) {
          spdlog::warn("ruler {} skipped at {} tokens: {}", task, length, e.message());
          continue;
        }
        for (size_t col = 0; col < columns; ++col) {
          RetrievalCell cell;
          cell.length = length;
          cell.depth = by_depth ? o.depths[col] : -1;
          for (int64_t t = 0; t < per_cell; ++t) {
            const int64_t index = by_depth ? 5 * t + depth_slot[col] : t;
            const RulerSample s = make_ruler_sample(task, *tok, length, index, o.seed, res);
            std::vector<int64_t> ids = {bos};
            const auto p = tok->encode(s.context + s.question);
            ids.insert(ids.end(), p.begin(), p.end());
            const double score = string_match_all(
                tok->decode(model.generate_greedy(ids, s.max_new_tokens, c.eos_token_id)),
                s.answers);
            score_sum += score;
            ++trials;
            ++cell.trials;
            cell.correct += score >= 1.0;
          }
          cells.push_back(cell);
        }
      }
      if (trials == 0) {
        std::cout << "ruler " << task << ": skipped (no length fits it)\n\n";
        report["ruler"][task] = {{"skipped", true}};
        continue;
      }
      const double mean = score_sum / trials;
      auto cells_json = print_grid("ruler " + task + " (mean string_match_all; cells: all found)",
                                   mean, trials, cells, by_depth);
      report["ruler"][task] = {
          {"string_match_all", mean}, {"trials", trials}, {"cells", cells_json}};
    }
  }

  // Attention structure on held-out windows of the full context.
  AttentionStatisticsParameters sp;
  std::mt19937_64 rng(o.seed);
  std::vector<std::vector<LayerAttentionStatistics>> per_seq;
  std::unique_ptr<TokenCorpus> tokens;
  if (!bytes) tokens = std::make_unique<TokenCorpus>(text, *tok);
  for (int64_t s = 0; s < o.attention_sequences; ++s) {
    std::vector<int64_t> ids = {bos};
    if (bytes) {
      for (unsigned char ch : filler.window(rng, static_cast<size_t>(ctx - 1))) ids.push_back(ch);
    } else {
      const std::vector<int64_t> w = tokens->window(rng, ctx - 1);
      ids.insert(ids.end(), w.begin(), w.end());
    }
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
      "Retrieval accuracy (pass-key, multi-key, RULER), held-out bits per byte and attention "
      "structure of a model with a full cache");
  add_config_option(*sub, o->config_path);
  sub->add_option("model_dir", o->model_dir, "Model directory")->required();
  sub->add_option("--heldout", o->heldout, "Held-out text (also the filler of retrieval samples)")
      ->capture_default_str();
  sub->add_option("--heldout-modern", o->heldout_modern,
                  "A second held-out text, for bits per byte only");
  sub->add_option("--ruler-tasks", o->ruler_tasks,
                  "RULER tasks over the same grid (\"none\": skip)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--ruler-words", o->ruler_words, "Word list of RULER keys")
      ->capture_default_str();
  sub->add_option("--lengths", o->lengths,
                  "Prompt lengths in tokens (default: 1/4, 1/2, 3/4 and all of the context, "
                  "at most 4096)")
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
