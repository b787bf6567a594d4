// Fills a subcommand's options from a YAML file, with the command line
// taking precedence: each top-level key names an option ("max_seq_len" or
// "max-seq-len" for --max-seq-len). Unknown keys are refused with the list of
// allowed ones, so a typo never silently falls back to a default.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace spindlekv::cli {

/// Adds `--config FILE` to `sub`. Call apply_yaml_config in the callback.
void add_config_option(CLI::App& sub, std::string& config_path);

/// Applies `config_path` (if not empty) to the options of `sub` that were not
/// given on the command line. Throws spindlekv::Error naming the file and key.
void apply_yaml_config(CLI::App& sub, const std::string& config_path);

}  // namespace spindlekv::cli
