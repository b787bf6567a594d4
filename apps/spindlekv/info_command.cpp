// `spindlekv info MODEL_DIR`: what a checkpoint is, without loading its weights.
#include <CLI/CLI.hpp>

#include <iostream>
#include <set>

#include "commands.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/model_config.h"
#include "model/tokenizer.h"

namespace spindlekv::cli {
namespace {

struct InfoOptions {
  std::string model_dir;
};

const char* scaling_name(RopeScaling s) {
  switch (s) {
    case RopeScaling::kNone:
      return "none";
    case RopeScaling::kLinear:
      return "linear";
    case RopeScaling::kLlama3:
      return "llama3";
  }
  return "?";
}

void run_info(const InfoOptions& opt) {
  const ModelConfig c = load_model_config(opt.model_dir);
  const Checkpoint ckpt(opt.model_dir);
  int64_t params = 0;
  std::set<std::string> stored_dtypes;
  for (const auto& name : ckpt.tensor_names()) {
    int64_t n = 1;
    for (int64_t d : ckpt.shape(name)) n *= d;
    params += n;
    stored_dtypes.insert(ckpt.dtype_name(name));
  }
  std::string dtypes;
  for (const auto& name : stored_dtypes) dtypes += (dtypes.empty() ? "" : ", ") + name;
  std::string tokenizer;
  try {
    tokenizer = load_tokenizer(opt.model_dir)->name();
  } catch (const Error& e) {
    tokenizer = std::string("none (") + e.message() + ")";
  }
  std::cout << "model:            " << opt.model_dir << "\n"
            << "architecture:     " << c.architecture << " (" << c.model_type << ")\n"
            << "layers:           " << c.num_layers << "\n"
            << "hidden size:      " << c.hidden_size << "\n"
            << "intermediate:     " << c.intermediate_size << "\n"
            << "query heads:      " << c.num_heads << "\n"
            << "kv heads:         " << c.num_kv_heads << " (group size " << c.group_size() << ")\n"
            << "head dim:         " << c.head_dim << "\n"
            << "vocab size:       " << c.vocab_size << "\n"
            << "max positions:    " << c.max_position_embeddings << "\n"
            << "rope:             theta " << c.rope.theta << ", scaling "
            << scaling_name(c.rope.scaling) << "\n"
            << "sliding window:   "
            << (c.sliding_window > 0 ? std::to_string(c.sliding_window) : "none") << "\n"
            << "tied embeddings:  " << (c.tie_word_embeddings ? "yes" : "no") << "\n"
            << "stored dtype:     " << dtypes << "\n"
            << "parameters:       " << params << "\n"
            << "KV bytes/token:   " << c.kv_bytes_per_token(2) << " (16-bit), "
            << c.kv_bytes_per_token(4) << " (float32)\n"
            << "tokenizer:        " << tokenizer << "\n";
}

}  // namespace

void register_info_command(CLI::App& app) {
  auto opt = std::make_shared<InfoOptions>();
  CLI::App* sub =
      app.add_subcommand("info", "Print a model's architecture, size and KV bytes per token");
  sub->add_option("model_dir", opt->model_dir, "Hugging Face model directory")->required();
  sub->callback([opt] { run_info(*opt); });
}

}  // namespace spindlekv::cli
