// `spindlekv train`: stage 2 of the offline pipeline.
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <unistd.h>
#include <cstdio>

#include "commands.h"
#include "core/blas_kernels.h"
#include "core/threads.h"
#include "train/train_runner.h"
#include "yaml_options.h"

namespace spindlekv::cli {
namespace {

struct TrainCommandOptions {
  std::string config_path;
  TrainOptions train;
  int threads = 0;
};

void run(CLI::App& sub, TrainCommandOptions& o) {
  apply_yaml_config(sub, o.config_path);
  configure_threads(o.threads);
  spdlog::info("compute: {}", compute_environment());
  const bool bar = ::isatty(STDERR_FILENO);
  CodebookFile f = run_train(o.train, [&](const TrainProgress& p) {
    if (!bar) return;
    const double eta = p.seconds / p.done * (p.total - p.done);
    std::fprintf(stderr, "\r%3lld/%lld codebooks  layer %lld  %.0f s  ETA %.0f s   ",
                 static_cast<long long>(p.done), static_cast<long long>(p.total),
                 static_cast<long long>(p.layer), p.seconds, eta);
    std::fflush(stderr);
  });
  if (bar) std::fprintf(stderr, "\n");
  std::printf(
      "| layer | key codewords | key coverage (held-out) | value codewords | value coverage "
      "(held-out) |\n");
  std::printf("|---|---|---|---|---|\n");
  for (const auto& L : f.layers) {
    double kc = 0, vc = 0;
    int64_t ks = 0, vs = 0;
    for (size_t g = 0; g < L.keys.sizes.size(); ++g) {
      kc += L.keys.heldout_coverage[g] / L.keys.sizes.size();
      ks += L.keys.sizes[g];
    }
    for (size_t g = 0; g < L.values.sizes.size(); ++g) {
      vc += L.values.heldout_coverage[g] / L.values.sizes.size();
      vs += L.values.sizes[g];
    }
    std::printf("| %lld | %lld | %.3f | %lld | %.3f |\n", static_cast<long long>(L.layer),
                static_cast<long long>(ks), kc, static_cast<long long>(vs), vc);
  }
  spdlog::info("wrote {} ({} layers, {} codebooks)", o.train.out, f.layers.size(),
               f.metadata.sharing);
}

}  // namespace

void register_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainCommandOptions>();
  TrainOptions& t = o->train;
  CLI::App* sub = app.add_subcommand(
      "train", "Stage 2: learn key/value codebooks from a capture (FAISS clustering and merging)");
  add_config_option(*sub, o->config_path);
  sub->add_option("--capture", t.capture, "Capture file from `spindlekv capture`")->required();
  sub->add_option("--out", t.out, "Output codebook file (.h5)")->required();
  sub->add_option("--layers", t.layers, "Layers: all, 0-7, 0,3")->capture_default_str();
  sub->add_option("--model", t.model_dir, "Model directory: refuse a capture of another model");
  sub->add_option("--sharing", t.sharing, "per-head or shared (one codebook per layer)")
      ->capture_default_str();
  sub->add_option("--key-threshold", t.key_threshold, "Cosine threshold for keys")
      ->capture_default_str();
  sub->add_option("--value-threshold", t.value_threshold, "Cosine threshold for values")
      ->capture_default_str();
  sub->add_option("--max-codewords", t.max_codewords, "Largest codebook")->capture_default_str();
  sub->add_option("--target-coverage", t.target_coverage,
                  "Smallest size reaching this held-out coverage (0: max size)")
      ->capture_default_str();
  sub->add_option("--sample-size", t.sample_size, "Training vectors per codebook")
      ->capture_default_str();
  sub->add_option("--heldout-size", t.heldout_size, "Held-out vectors per codebook")
      ->capture_default_str();
  sub->add_option("--heldout-every", t.heldout_every, "Every n-th sequence is held out")
      ->capture_default_str();
  sub->add_option("--kmeans-iterations", t.trainer.kmeans_iterations,
                  "Spherical k-means iterations")
      ->capture_default_str();
  sub->add_option("--greedy-sample", t.trainer.greedy_sample, "Vectors in the greedy cover's graph")
      ->capture_default_str();
  sub->add_option("--merge-threshold", t.trainer.merge_threshold,
                  "Cosine above which codewords merge")
      ->capture_default_str();
  sub->add_option("--min-support", t.trainer.min_support,
                  "Codewords covering fewer vectors are dropped")
      ->capture_default_str();
  sub->add_option("--max-rounds", t.trainer.max_rounds, "Merging rounds")->capture_default_str();
  sub->add_option("--seed", t.trainer.seed, "Seed")->capture_default_str();
  sub->add_flag("--overwrite", t.overwrite, "Replace an existing output");
  sub->add_option("--threads", o->threads, "Threads (0: every core)")->capture_default_str();
  sub->callback([sub, o] { run(*sub, *o); });
}

}  // namespace spindlekv::cli
