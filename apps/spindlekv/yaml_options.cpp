#include "yaml_options.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <filesystem>

#include "common/error.h"

namespace spindlekv::cli {
namespace {

std::string dashed(std::string key) {
  for (char& c : key) {
    if (c == '_') c = '-';
  }
  return key;
}

std::string allowed_keys(CLI::App& sub) {
  std::string out;
  for (const CLI::Option* opt : sub.get_options()) {
    if (opt->get_lnames().empty()) continue;
    const std::string& name = opt->get_lnames().front();
    if (name == "help" || name == "config") continue;
    out += (out.empty() ? "" : ", ") + name;
  }
  return out;
}

}  // namespace

void add_config_option(CLI::App& sub, std::string& config_path) {
  sub.add_option("--config", config_path,
                 "YAML file of options (keys as the long flags, e.g. max_seq_len: 1024); "
                 "flags on the command line win");
}

void apply_yaml_config(CLI::App& sub, const std::string& config_path) {
  if (config_path.empty()) return;
  with_context("config '" + config_path + "'", [&] {
    SKV_CHECK(std::filesystem::exists(config_path), "file does not exist");
    YAML::Node root;
    try {
      root = YAML::LoadFile(config_path);
    } catch (const YAML::Exception& e) {
      SKV_THROW(kInvalidInput, "not valid YAML: ", e.what());
    }
    if (!root || root.IsNull()) return;
    SKV_CHECK(root.IsMap(), "top level must be a mapping of option names to values");
    for (const auto& item : root) {
      const std::string key = item.first.as<std::string>();
      CLI::Option* opt = nullptr;
      try {
        opt = sub.get_option("--" + dashed(key));
      } catch (const CLI::OptionNotFound&) {
        SKV_THROW(kInvalidInput, "unknown key '", key, "' for '", sub.get_name(),
                  "' (allowed: ", allowed_keys(sub), ")");
      }
      if (opt->count() > 0) continue;  // the command line wins
      const YAML::Node& value = item.second;
      std::vector<std::string> values;
      if (value.IsSequence()) {
        for (const auto& v : value) values.push_back(v.as<std::string>());
      } else if (value.IsScalar()) {
        values.push_back(value.as<std::string>());
      } else {
        SKV_THROW(kInvalidInput, "key '", key, "' must be a scalar or a list");
      }
      try {
        if (opt->get_type_size() == 0) {  // a flag
          const std::string v = values.at(0);
          SKV_CHECK(v == "true" || v == "false", "key '", key, "' must be true or false, got '", v,
                    "'");
          if (v == "true") opt->add_result("true");
        } else {
          for (const auto& v : values) opt->add_result(v);
        }
        opt->run_callback();
      } catch (const CLI::Error& e) {
        SKV_THROW(kInvalidInput, "key '", key, "': value '", values.at(0),
                  "' rejected: ", e.what());
      }
    }
  });
}

}  // namespace spindlekv::cli
