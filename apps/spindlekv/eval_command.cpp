// `spindlekv eval`: stage 5, SpindleKV beside the standard baselines at equal
// measured memory, with JSON/CSV/Markdown results and gnuplot plots.
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/blas_kernels.h"
#include "core/error.h"
#include "core/threads.h"
#include "core/version.h"
#include "eval/compression_eval.h"
#include "eval/eval_report.h"
#include "eval_plots.h"
#include "yaml_options.h"

namespace spindlekv::cli {
namespace {

struct EvalCommandOptions {
  std::string config_path;
  EvalOptions eval;
  bool overwrite = false;
  bool resume = false;
  int threads = 0;
};

void run(CLI::App& sub, EvalCommandOptions& o) {
  apply_yaml_config(sub, o.config_path);
  const int threads = configure_threads(o.threads);
  spdlog::info("compute: {}", compute_environment());
  const std::string results = (std::filesystem::path(o.eval.out_dir) / "results.json").string();
  if (!o.overwrite && !o.resume && std::filesystem::exists(results)) {
    SKV_THROW(kInvalidInput, "output '", results, "' exists (use --overwrite to replace it)");
  }
  // Finished settings are kept here until the report is written.
  EvalContinuation continuation;
  continuation.partial_path =
      (std::filesystem::path(o.eval.out_dir) / "results.partial.json").string();
  continuation.resume = o.resume;
  if (!o.overwrite && !o.resume && std::filesystem::exists(continuation.partial_path)) {
    SKV_THROW(kInvalidInput, "'", continuation.partial_path,
              "' holds the finished settings of an interrupted run (use --resume to continue "
              "it, or --overwrite to start afresh)");
  }
  if (o.resume && !std::filesystem::exists(continuation.partial_path) &&
      std::filesystem::exists(results)) {
    SKV_THROW(kInvalidInput, "nothing to resume in '", o.eval.out_dir, "': its run finished ('",
              results, "' exists, no results.partial.json)");
  }
  // Starting afresh: an earlier run's finished settings are not taken later.
  if (o.overwrite) std::filesystem::remove(continuation.partial_path);
  std::filesystem::create_directories(o.eval.out_dir);
  const auto t0 = std::chrono::steady_clock::now();
  const bool tty = ::isatty(STDERR_FILENO);
  auto records = run_eval(
      o.eval,
      [&](const EvalProgress& p) {
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (p.method.empty()) {
          std::fprintf(stderr, "%s%lld/%lld settings done in %.0f s\n", tty ? "\r" : "",
                       static_cast<long long>(p.done), static_cast<long long>(p.total), s);
          return;
        }
        const double eta = p.done > 0 ? s / p.done * (p.total - p.done) : 0;
        std::fprintf(stderr, "%s[%lld/%lld] %-15s ratio %.2f  %.0f s  ETA %.0f s   %s",
                     tty ? "\r" : "", static_cast<long long>(p.done + 1),
                     static_cast<long long>(p.total), p.method.c_str(), p.target_ratio, s, eta,
                     tty ? "" : "\n");
        std::fflush(stderr);
      },
      continuation);
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  nlohmann::ordered_json header = {
      {"tool_version", version_string()},
      {"date", date},
      {"options", nlohmann::ordered_json::parse(eval_options_json(o.eval))},
      {"threads", threads},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()},
      {"resumed", o.resume}};
  write_eval_report(o.eval.out_dir, o.eval, records, header.dump());
  std::filesystem::remove(continuation.partial_path);
  const auto pngs =
      write_eval_plots((std::filesystem::path(o.eval.out_dir) / "plots").string(), records);
  for (const auto& [task, metric] : eval_task_metrics(records)) {
    std::printf("## %s: %s\n\n%s\n%s\n", task.c_str(), metric.c_str(),
                summary_table(records, task, metric).c_str(),
                paired_comparison(records, task, metric).c_str());
  }
  spdlog::info("wrote {} records, {} plots to {}", records.size(), pngs.size(), o.eval.out_dir);
}

}  // namespace

void register_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalCommandOptions>();
  EvalOptions& e = o->eval;
  CLI::App* sub = app.add_subcommand(
      "eval", "Stage 5: compare SpindleKV with eviction baselines at equal measured memory");
  add_config_option(*sub, o->config_path);
  sub->add_option("--model", e.model_dir, "Model directory")->required();
  sub->add_option("--artifact", e.artifact,
                  "Artifact from `spindlekv export` (spindle methods, fp8-calibrated)");
  sub->add_option("--out", e.out_dir, "Output directory")->required();
  std::string all_methods;
  for (const auto& m : known_methods()) all_methods += (all_methods.empty() ? "" : ",") + m;
  sub->add_option("--methods", e.methods,
                  "Methods to compare, of: " + all_methods +
                      "; a SpindleKV variant also with +pool (importance max-pooled over 7 "
                      "neighbours, as SnapKV does); a method that evicts also with a quantiser "
                      "suffix (+fp8, "
                      "+fp8-calibrated, +kivi4, +kivi2: its exact rows quantised); each but full "
                      "also with +l0 (layer 0 held as token ids). fp8, fp8-calibrated, kivi4 and "
                      "kivi2 alone quantise the full cache: a fixed ratio, reported as measured")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--ratios", e.ratios, "Target memory ratios")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--tasks", e.tasks,
                  "ppl, kl, passkey, fidelity, jsonl:FILE, ruler:all or ruler:TASK[,TASK...] "
                  "(niah_single, niah_multikey, niah_multikey_dense, niah_multivalue, "
                  "niah_multiquery, vt, cwe, fwe)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--text", e.text, "Held-out text (ppl, kl, fidelity, pass-key filler)")
      ->capture_default_str();
  sub->add_option("--ppl-samples", e.ppl_samples, "Contexts for ppl, kl and fidelity")
      ->capture_default_str();
  sub->add_option("--ppl-context", e.ppl_context, "Tokens compressed per context")
      ->capture_default_str();
  sub->add_option("--ppl-continuation", e.ppl_continuation, "Tokens scored after it")
      ->capture_default_str();
  sub->add_option("--passkey-lengths", e.passkey_lengths, "Pass-key context lengths")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--passkey-depths", e.passkey_depths, "Pass-key insertion depths")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--passkey-trials", e.passkey_trials, "Trials per length x depth")
      ->capture_default_str();
  sub->add_option("--jsonl-max-new", e.jsonl_max_new, "Answer tokens generated (jsonl tasks)")
      ->capture_default_str();
  sub->add_option("--jsonl-limit", e.jsonl_limit, "Samples per JSONL file (0: all)")
      ->capture_default_str();
  sub->add_option("--window", e.window, "Observation window of every method")
      ->capture_default_str();
  sub->add_option("--ratio-tolerance", e.ratio_tolerance, "Allowed |measured - target| ratio")
      ->capture_default_str();
  sub->add_option("--shared-requests", e.shared_requests,
                  "Concurrent requests sharing the shared tables (calibrated codebooks, the "
                  "token table, codec tables); each is charged the whole tables / N")
      ->capture_default_str();
  sub->add_option("--ruler-lengths", e.ruler_lengths,
                  "RULER sample lengths in model tokens, answer included (default: the model's "
                  "context up to 4096)")
      ->delimiter(',');
  sub->add_option("--ruler-samples", e.ruler_samples, "RULER samples per task and length")
      ->capture_default_str();
  sub->add_option("--protocol", e.ruler_protocol,
                  "RULER: question-aware (the question is compressed with the context), "
                  "question-agnostic (the context is compressed first) or both")
      ->check(CLI::IsMember({"question-aware", "question-agnostic", "both"}))
      ->capture_default_str();
  sub->add_option("--ruler-words", e.ruler_words, "Word list for RULER keys and common words")
      ->capture_default_str();
  sub->add_option("--ruler-haystack", e.ruler_haystack,
                  "Text for RULER's NIAH haystacks (default: RULER's noise sentences)");
  sub->add_option("--kv-dtype", e.kv_dtype,
                  "Storage dtype of every method's cache and of the dense cache the ratio "
                  "divides by: float32, float16, bfloat16")
      ->check(CLI::IsMember({"float32", "float16", "bfloat16"}))
      ->capture_default_str();
  sub->add_option("--dtype", e.model_dtype,
                  "The model's weights and compute: float32, bfloat16 or float16 (norms and "
                  "softmax accumulate in float32)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}))
      ->capture_default_str();
  sub->add_option("--device", e.device,
                  "Where the model and every method's cache run: cpu, cuda or cuda:N (a CUDA "
                  "build of LibTorch)")
      ->capture_default_str();
  sub->add_option("--seed", e.seed, "Seed")->capture_default_str();
  auto* overwrite = sub->add_flag("--overwrite", o->overwrite, "Replace existing results");
  sub->add_flag("--resume", o->resume,
                "Continue an interrupted run with the same options: its finished (method, "
                "ratio) settings are taken from OUT/results.partial.json (methods and ratios "
                "may be added)")
      ->excludes(overwrite);
  sub->add_option("--threads", o->threads, "Threads (0: every core)")->capture_default_str();
  sub->callback([sub, o] { run(*sub, *o); });
}

}  // namespace spindlekv::cli
