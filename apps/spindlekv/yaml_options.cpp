#include "yaml_options.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <filesystem>

#include "core/error.h"

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

YamlOption resolve_yaml_option(CLI::App& sub, const std::string& key, const YAML::Node& value,
                               const std::string& where) {
  YamlOption out;
  out.flag = "--" + dashed(key);
  const std::string at = where.empty() ? "" : where + ": ";
  try {
    out.option = sub.get_option(out.flag);
  } catch (const CLI::OptionNotFound&) {
    SKV_THROW(kInvalidInput, at, "unknown key '", key, "' for '", sub.get_name(),
              "' (allowed: ", allowed_keys(sub), ")");
  }
  std::vector<std::string> values;
  if (value.IsSequence()) {
    for (const auto& v : value) values.push_back(v.as<std::string>());
  } else if (value.IsScalar()) {
    values.push_back(value.as<std::string>());
  } else {
    SKV_THROW(kInvalidInput, at, "key '", key, "' must be a scalar or a list");
  }
  if (out.option->get_expected_max() == 0) {  // a flag: takes no value on the command line
    SKV_CHECK(values.size() == 1 && (values[0] == "true" || values[0] == "false"), at, "key '", key,
              "' is a flag and must be true or false");
    out.set = values[0] == "true";
  } else {
    out.set = true;
    out.values = std::move(values);
  }
  return out;
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
      const YamlOption r = resolve_yaml_option(sub, key, item.second, "");
      if (r.option->count() > 0 || !r.set) continue;  // the command line wins
      try {
        if (r.values.empty()) {
          r.option->add_result("true");
        } else {
          for (const auto& v : r.values) r.option->add_result(v);
        }
        r.option->run_callback();
      } catch (const CLI::Error& e) {
        SKV_THROW(kInvalidInput, "key '", key, "': value '",
                  r.values.empty() ? "true" : r.values.at(0), "' rejected: ", e.what());
      }
    }
  });
}

}  // namespace spindlekv::cli
