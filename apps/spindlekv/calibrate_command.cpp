// `spindlekv calibrate --config configs/<model>.yaml`: the main job. Runs
// capture, train, export and a short evaluation into one output directory,
// skipping a stage whose inputs have not changed since it last ran.
//
// The YAML file has a section per stage whose keys are that subcommand's long
// options (so every key, default and check is the subcommand's own), plus
// the model, the output directory and the architecture the config expects:
//
//   model: /models/Llama-3-8B-Instruct
//   out: out/llama3
//   expect: {model_type: llama, num_hidden_layers: 32, num_key_value_heads: 8}
//   capture: {text: calib/, seq-len: 4096}
//   train: {max-codewords: 1024}
//   export: {}
//   eval: {ratios: [0.2], tasks: [ppl, fidelity]}
//
// A stage's signature hashes its arguments, the tool version and its inputs'
// signatures (the model fingerprint and TextSource::content_hash of the text
// for capture; the previous stage's signature after it), and is kept in
// OUT/stages.json.
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "capture/text_source.h"
#include "commands.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/model_config.h"
#include "core/model_fingerprint.h"
#include "core/version.h"
#include "yaml_options.h"

namespace spindlekv::cli {
namespace {

namespace fs = std::filesystem;

struct CalibrateOptions {
  std::string config_path;
  std::string out;    ///< overrides the config's `out`
  std::string model;  ///< overrides the config's `model`
  bool force = false;
  int threads = 0;
};

const std::vector<std::string> kTopKeys = {"model", "out",    "expect", "capture",
                                           "train", "export", "eval"};

// The subcommands calibrate runs, registered as on the command line.
std::unique_ptr<CLI::App> stage_app() {
  auto app = std::make_unique<CLI::App>("spindlekv");
  register_capture_command(*app);
  register_train_command(*app);
  register_export_command(*app);
  register_eval_command(*app);
  register_inspect_command(*app);
  return app;
}

// Arguments of a stage from its YAML section, after the fixed ones: the same
// translation as a --config file's (resolve_yaml_option).
std::vector<std::string> section_args(const YAML::Node& section, const std::string& name) {
  std::vector<std::string> args;
  if (!section) return args;
  SKV_CHECK(section.IsMap(), "section '", name, "' must map option names to values");
  const auto app = stage_app();
  CLI::App* sub = app->get_subcommand(name);
  for (const auto& item : section) {
    const YamlOption r = resolve_yaml_option(*sub, item.first.as<std::string>(), item.second,
                                             "section '" + name + "'");
    if (!r.set) continue;
    args.push_back(r.flag);
    args.insert(args.end(), r.values.begin(), r.values.end());
  }
  return args;
}

// Runs one subcommand in-process with `args` (without the program name).
void run_stage(const std::string& stage, const std::vector<std::string>& args) {
  const auto app_owner = stage_app();
  CLI::App& app = *app_owner;
  std::vector<const char*> argv{"spindlekv"};
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    SKV_THROW(kInvalidInput, "section '", stage, "': ", e.what(), " (see `spindlekv ", stage,
              " --help` for its keys)");
  }
}

void check_expectations(const YAML::Node& expect, const ModelConfig& c, const std::string& model) {
  if (!expect) return;
  SKV_CHECK(expect.IsMap(), "'expect' must map config.json fields to values");
  const std::map<std::string, std::string> actual = {
      {"model_type", c.model_type},
      {"architecture", c.architecture},
      {"num_hidden_layers", std::to_string(c.num_layers)},
      {"num_attention_heads", std::to_string(c.num_heads)},
      {"num_key_value_heads", std::to_string(c.num_kv_heads)},
      {"head_dim", std::to_string(c.head_dim)},
      {"hidden_size", std::to_string(c.hidden_size)},
      {"vocab_size", std::to_string(c.vocab_size)}};
  for (const auto& item : expect) {
    const std::string key = item.first.as<std::string>();
    auto it = actual.find(key);
    if (it == actual.end()) {
      std::string allowed;
      for (const auto& [k, v] : actual) allowed += (allowed.empty() ? "" : ", ") + k;
      SKV_THROW(kInvalidInput, "'expect' key '", key, "' is unknown (allowed: ", allowed, ")");
    }
    const std::string want = item.second.as<std::string>();
    SKV_CHECK(want == it->second, "model '", model, "' has ", key, " = ", it->second,
              " but the config expects ", want, " (a config for another model?)");
  }
}

void run(const CalibrateOptions& o) {
  with_context("calibrate config '" + o.config_path + "'", [&] {
    SKV_CHECK(fs::exists(o.config_path), "file does not exist");
    YAML::Node root;
    try {
      root = YAML::LoadFile(o.config_path);
    } catch (const YAML::Exception& e) {
      SKV_THROW(kInvalidInput, "not valid YAML: ", e.what());
    }
    SKV_CHECK(root.IsMap(), "top level must be a mapping");
    for (const auto& item : root) {
      const std::string key = item.first.as<std::string>();
      SKV_CHECK(std::find(kTopKeys.begin(), kTopKeys.end(), key) != kTopKeys.end(), "unknown key '",
                key, "' (allowed: model, out, expect, capture, train, export, eval)");
    }
    const std::string model = !o.model.empty() ? o.model
                              : root["model"]  ? root["model"].as<std::string>()
                                               : "";
    const std::string out = !o.out.empty() ? o.out
                            : root["out"]  ? root["out"].as<std::string>()
                                           : "";
    SKV_CHECK(!model.empty(), "no model: set 'model' or pass --model");
    SKV_CHECK(!out.empty(), "no output directory: set 'out' or pass --out");
    SKV_CHECK(fs::is_directory(model), "model directory '", model, "' does not exist");
    const ModelConfig config = load_model_config(model);
    check_expectations(root["expect"], config, model);
    fs::create_directories(out);
    const fs::path dir(out);
    const std::string threads = std::to_string(o.threads);

    const std::string stages_path = (dir / "stages.json").string();
    nlohmann::json stages = nlohmann::json::object();
    if (fs::exists(stages_path) && !o.force) {
      std::ifstream in(stages_path);
      stages = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
      if (stages.is_discarded() || !stages.is_object()) stages = nlohmann::json::object();
    }
    spdlog::info("fingerprinting {}", model);
    const std::string fingerprint = fingerprint_model(model).to_string();
    // The tool version too: a newer trainer or exporter must not reuse old outputs.
    std::string previous = fingerprint + '\x1f' + version_string();
    auto stage = [&](const std::string& name, std::vector<std::string> fixed,
                     const std::string& output, const std::string& extra_inputs) {
      std::vector<std::string> args = {name};
      args.insert(args.end(), fixed.begin(), fixed.end());
      const auto user = section_args(root[name], name);
      args.insert(args.end(), user.begin(), user.end());
      std::string joined;
      for (const auto& a : args) joined += a + '\x1f';
      const std::string signature = hash_bytes(joined + previous + extra_inputs);
      previous = signature;
      if (stages.value(name, "") == signature && fs::exists(output)) {
        spdlog::info("{}: inputs unchanged, keeping {}", name, output);
        return;
      }
      spdlog::info("{}: running", name);
      run_stage(name, args);
      stages[name] = signature;
      write_file_atomically(stages_path, stages.dump(2) + "\n");
    };
    std::vector<std::string> texts;
    if (root["capture"] && root["capture"]["text"]) {
      const YAML::Node& t = root["capture"]["text"];
      if (t.IsSequence()) {
        for (const auto& x : t) texts.push_back(x.as<std::string>());
      } else {
        texts.push_back(t.as<std::string>());
      }
    }
    SKV_CHECK(!texts.empty(), "section 'capture' needs 'text' (calibration files or directories)");
    const std::string capture = (dir / "capture.h5").string();
    const std::string codebooks = (dir / "codebooks.h5").string();
    const std::string artifact = (dir / "artifact.safetensors").string();
    stage("capture", {"--model", model, "--out", capture, "--overwrite", "--threads", threads},
          capture, TextSource(texts).content_hash());
    stage("train",
          {"--capture", capture, "--out", codebooks, "--model", model, "--overwrite", "--threads",
           threads},
          codebooks, "");
    stage("export",
          {"--codebooks", codebooks, "--capture", capture, "--out", artifact, "--model", model,
           "--overwrite", "--threads", threads},
          artifact, "");
    if (root["eval"]) {
      stage("eval",
            {"--model", model, "--artifact", artifact, "--out", (dir / "eval").string(),
             "--overwrite", "--threads", threads},
            (dir / "eval" / "results.json").string(), "");
    }
    // The summary: codebook coverage and budgets from the artifact, quality
    // and memory from the evaluation (whether or not the stages ran now).
    std::printf("\n# calibrate summary: %s\n\n", out.c_str());
    std::fflush(stdout);
    run_stage("inspect", {"inspect", artifact, "--ratios", "0.1,0.2,0.3"});
    const fs::path summary = dir / "eval" / "summary.md";
    if (root["eval"] && fs::exists(summary)) {
      std::ifstream in(summary);
      std::printf("\n%s", std::string((std::istreambuf_iterator<char>(in)), {}).c_str());
    }
    spdlog::info("calibrate: done, artifact {}", artifact);
  });
}

}  // namespace

void register_calibrate_command(CLI::App& app) {
  auto o = std::make_shared<CalibrateOptions>();
  CLI::App* sub = app.add_subcommand(
      "calibrate", "The main job: capture, train, export and evaluate from one YAML config");
  sub->add_option("--config", o->config_path, "YAML config (configs/<model>.yaml)")->required();
  sub->add_option("--out", o->out, "Output directory (overrides the config's 'out')");
  sub->add_option("--model", o->model, "Model directory (overrides the config's 'model')");
  sub->add_flag("--force", o->force, "Run every stage even if its inputs are unchanged");
  sub->add_option("--threads", o->threads, "Threads (0: every core)")->capture_default_str();
  sub->callback([o] { run(*o); });
}

}  // namespace spindlekv::cli
