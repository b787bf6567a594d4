// Fuzzes the YAML config loader against a subcommand with every kind of
// option (string, number, list, flag).
#include <CLI/CLI.hpp>

#include "../apps/spindlekv/yaml_options.h"
#include "core/error.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = spindlekv::fuzz::write_input(data, size, ".yaml");
  CLI::App app;
  CLI::App* sub = app.add_subcommand("stage");
  std::string config, name;
  int64_t count = 0;
  double ratio = 0;
  std::vector<double> ratios;
  bool flag = false;
  spindlekv::cli::add_config_option(*sub, config);
  sub->add_option("--name", name);
  sub->add_option("--count", count);
  sub->add_option("--ratio", ratio);
  sub->add_option("--ratios", ratios)->delimiter(',');
  sub->add_flag("--flag", flag);
  try {
    spindlekv::cli::apply_yaml_config(*sub, path);
  } catch (const spindlekv::Error&) {
  }
  return 0;
}
