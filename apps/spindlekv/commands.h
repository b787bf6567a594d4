// Subcommands of the spindlekv CLI. Each owns its options struct and
// registers itself on the top-level CLI11 app.
#pragma once

namespace CLI {
class App;
}

#include <string>

namespace spindlekv {
struct Artifact;
}

namespace spindlekv::cli {

/// The artifact's codec plans and the sensitivities they were chosen from,
/// as Markdown (`spindlekv export` and `inspect` print it).
std::string codec_plans_text(const Artifact& artifact);

void register_info_command(CLI::App& app);
void register_run_command(CLI::App& app);
void register_train_model_command(CLI::App& app);
void register_model_report_command(CLI::App& app);
void register_capture_command(CLI::App& app);
void register_train_command(CLI::App& app);
void register_export_command(CLI::App& app);
void register_inspect_command(CLI::App& app);
void register_eval_command(CLI::App& app);
void register_calibrate_command(CLI::App& app);
void register_report_command(CLI::App& app);

}  // namespace spindlekv::cli
