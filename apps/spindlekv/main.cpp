// spindlekv: KV-cache compression for Llama-family models.
// The pipeline: capture -> train -> export -> runtime -> eval.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <iostream>

#include "commands.h"
#include "core/blas_kernels.h"
#include "core/error.h"
#include "core/memory_policy.h"
#include "core/version.h"

int main(int argc, char** argv) {
  // Before anything computes: OpenBLAS may have picked kernels far below the
  // CPU's (core/blas_kernels.h); this re-executes once with better ones.
  spindlekv::fix_blas_kernels(argc, argv);
  // Large tensors freed in one step are reused by the next without page
  // faults (core/memory_policy.h).
  spindlekv::keep_freed_memory_mapped();
  // Logs go to stderr so that stdout carries only results.
  spdlog::set_default_logger(spdlog::stderr_color_mt("spindlekv"));
  spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");

  CLI::App app{"SpindleKV: smaller KV caches for Llama-family models, calibrated offline."};
  app.set_version_flag("--version", spindlekv::version_string());
  app.require_subcommand(1);
  app.add_flag_callback(
      "-v,--verbose", [] { spdlog::set_level(spdlog::level::debug); },
      "Log debug messages (capture: each sequence made durable)");
  app.add_flag("--no-blas-fix",
               "Keep the kernels OpenBLAS picked, even when they are below what the CPU runs "
               "(also SPINDLEKV_NO_BLAS_FIX=1)");
  app.fallthrough();  // the global flags are accepted after the subcommand too
  spindlekv::cli::register_info_command(app);
  spindlekv::cli::register_run_command(app);
  spindlekv::cli::register_train_model_command(app);
  spindlekv::cli::register_capture_command(app);
  spindlekv::cli::register_train_command(app);
  spindlekv::cli::register_export_command(app);
  spindlekv::cli::register_inspect_command(app);
  spindlekv::cli::register_eval_command(app);
  spindlekv::cli::register_calibrate_command(app);
  spindlekv::cli::register_model_report_command(app);
  spindlekv::cli::register_report_command(app);

  try {
    app.parse(argc, argv);  // subcommand callbacks run inside parse
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const spindlekv::Error& e) {
    std::cerr << "spindlekv: error: " << e.what() << "\n";
    return spindlekv::exit_code_for(e.kind());
  } catch (const std::exception& e) {
    std::cerr << "spindlekv: unexpected error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
