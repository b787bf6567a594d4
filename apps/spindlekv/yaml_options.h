// Fills a subcommand's options from a YAML file, with the command line
// taking precedence: each top-level key names an option ("max_seq_len" or
// "max-seq-len" for --max-seq-len). Unknown keys are refused with the list of
// allowed ones, so a typo never silently falls back to a default.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace spindlekv::cli {

/// One key of a YAML mapping resolved against a subcommand's options: the
/// one translation of YAML to options, for --config files and calibrate's
/// stage sections alike. A flag takes true or false (false: not set); any
/// other option a scalar or a list, given to it as written.
struct YamlOption {
  CLI::Option* option = nullptr;
  std::string flag;                 ///< "--key", underscores as dashes
  bool set = false;                 ///< false: the option is left alone (a flag set to false)
  std::vector<std::string> values;  ///< empty for a flag
};

/// Resolves `key: value` against `sub`'s options; throws kInvalidInput
/// naming `where`, the key and the allowed keys or values.
YamlOption resolve_yaml_option(CLI::App& sub, const std::string& key, const YAML::Node& value,
                               const std::string& where);

/// Adds `--config FILE` to `sub`. Call apply_yaml_config in the callback.
void add_config_option(CLI::App& sub, std::string& config_path);

/// Applies `config_path` (if not empty) to the options of `sub` that were not
/// given on the command line. Throws spindlekv::Error naming the file and key.
void apply_yaml_config(CLI::App& sub, const std::string& config_path);

}  // namespace spindlekv::cli
