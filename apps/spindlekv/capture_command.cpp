// `spindlekv capture`: stage 1 of the offline pipeline.
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <unistd.h>
#include <atomic>
#include <csignal>
#include <cstdio>

#include "capture/capture_runner.h"
#include "commands.h"
#include "core/blas_kernels.h"
#include "core/threads.h"
#include "yaml_options.h"

namespace spindlekv::cli {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_interrupt(int) {
  // Second Ctrl-C: stop at once (flushed sequences stay resumable).
  if (g_stop.exchange(true)) std::_Exit(130);
}

struct CaptureCommandOptions {
  std::string config_path;
  CaptureOptions capture;
  int threads = 0;
  bool quiet = false;
};

void draw_progress(const CaptureProgress& p) {
  const int width = 30;
  const int filled = static_cast<int>(p.fraction * width);
  std::fprintf(stderr, "\r[%.*s%*s] %5.1f%%  %lld seq  %.0f tok/s  ETA %.0f s   ", filled,
               "##############################", width - filled, "", 100 * p.fraction,
               static_cast<long long>(p.sequences), p.tokens_per_second, p.eta_seconds);
  std::fflush(stderr);
}

void run(CLI::App& sub, CaptureCommandOptions& o) {
  apply_yaml_config(sub, o.config_path);
  configure_threads(o.threads);
  spdlog::info("compute: {}", compute_environment());
  g_stop = false;
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  o.capture.stop_requested = &g_stop;
  const bool bar = !o.quiet && ::isatty(STDERR_FILENO);
  // Without a bar, --verbose logs each step (after a flush when --flush-every 1).
  auto log_progress = [](const CaptureProgress& p) {
    spdlog::debug("{} sequences captured", p.sequences);
  };
  CaptureSummary s = run_capture(
      o.capture, bar ? std::function<void(const CaptureProgress&)>(draw_progress) : log_progress);
  if (bar) std::fprintf(stderr, "\n");
  if (!s.finished) {
    spdlog::warn("interrupted after {} complete sequences; continue with --resume ({}.partial)",
                 s.sequences, o.capture.out);
    std::exit(130);
  }
  spdlog::info("captured {} sequences ({} resumed), {} vectors per layer, into {} in {:.1f} s",
               s.sequences, s.resumed_sequences, s.vectors_per_layer, o.capture.out, s.seconds);
}

}  // namespace

void register_capture_command(CLI::App& app) {
  auto o = std::make_shared<CaptureCommandOptions>();
  CaptureOptions& c = o->capture;
  CLI::App* sub = app.add_subcommand(
      "capture", "Stage 1: dump pre-RoPE K/V and attention statistics of calibration text to HDF5");
  add_config_option(*sub, o->config_path);
  sub->add_option("--model", c.model_dir, "Hugging Face model directory")->required();
  sub->add_option("--text", c.text_paths,
                  "Calibration text: files, directories, .jsonl (field 'text')")
      ->required();
  sub->add_option("--out", c.out, "Output capture file (.h5)")->required();
  sub->add_option("--layers", c.layers, "Layers: all, 0-7, 0,2,5")->capture_default_str();
  sub->add_option("--seq-len", c.seq_len, "Tokens per sequence")->capture_default_str();
  sub->add_option("--max-sequences", c.max_sequences, "Stop after N sequences (0: all text)")
      ->capture_default_str();
  sub->add_option("--max-tokens", c.max_tokens, "Stop after N tokens (0: all text)")
      ->capture_default_str();
  sub->add_option("--window", c.window, "Observation window (last queries) of the statistics")
      ->capture_default_str();
  sub->add_option("--positions-per-sequence", c.positions_per_sequence,
                  "Vectors sampled per sequence and layer (0: all)")
      ->capture_default_str();
  sub->add_option("--seed", c.seed, "Seed of position sampling")->capture_default_str();
  sub->add_option("--flush-every", c.flush_every, "Sequences between durability points")
      ->capture_default_str();
  sub->add_option("--compression-level", c.compression_level,
                  "Deflate level of vector datasets (0: none)")
      ->capture_default_str();
  sub->add_option("--key-threshold", c.stats.key_threshold, "Cosine threshold of key pairs")
      ->capture_default_str();
  sub->add_option("--value-threshold", c.stats.value_threshold, "Cosine threshold of value pairs")
      ->capture_default_str();
  sub->add_option("--sink-tokens", c.stats.sink_tokens,
                  "First tokens whose attention mass is recorded")
      ->capture_default_str();
  auto* resume =
      sub->add_flag("--resume", c.resume, "Continue an interrupted capture (<out>.partial)");
  sub->add_flag("--overwrite", c.overwrite, "Replace an existing output")->excludes(resume);
  sub->add_option("--device", c.device, "Compute device (cpu, cuda)")->capture_default_str();
  sub->add_option("--dtype", c.dtype,
                  "Weights and compute: float32, bfloat16 or float16 (K/V stored as float32)")
      ->capture_default_str();
  sub->add_option("--threads", o->threads, "Intra-op threads (0: every core)")
      ->capture_default_str();
  sub->add_flag("--quiet", o->quiet, "No progress bar");
  sub->callback([sub, o] { run(*sub, *o); });
}

}  // namespace spindlekv::cli
