// `spindlekv run MODEL_DIR`: greedy continuation, and logits for comparison
// with other implementations.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "core/blas_kernels.h"
#include "core/error.h"
#include "core/npy_writer.h"
#include "core/threads.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"

namespace spindlekv::cli {
namespace {

struct RunOptions {
  std::string model_dir;
  std::string prompt;
  std::string tokens;  ///< comma-separated ids, instead of --prompt
  int64_t max_new = 32;
  std::string logits_out;  ///< .npy path for [tokens, vocab] float32 logits
  int threads = 0;         ///< 0: every core
  std::string device = "cpu";
  std::string dtype = "float32";  ///< the model's weights and compute: float32, bfloat16, float16
};

std::vector<int64_t> parse_token_list(const std::string& text) {
  std::vector<int64_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      ids.push_back(std::stoll(item, &used));
      SKV_CHECK_EQ(used, item.size(), "--tokens: '", item, "' is not an integer");
    } catch (const std::logic_error&) {
      SKV_THROW(kInvalidInput, "--tokens: '", item, "' is not an integer");
    }
  }
  SKV_CHECK(!ids.empty(), "--tokens is empty");
  return ids;
}

void run(const RunOptions& opt) {
  configure_threads(opt.threads);
  spdlog::info("compute: {}", compute_environment());
  c10::InferenceMode inference;
  LlamaModel model = LlamaModel::load(opt.model_dir, parse_device(opt.device, "--device"),
                                      parse_model_dtype(opt.dtype, "--dtype"));
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = load_tokenizer(opt.model_dir);
  } catch (const Error& e) {
    if (opt.tokens.empty()) throw;
    spdlog::info("no tokenizer ({}); printing token ids only", e.message());
  }
  std::vector<int64_t> ids;
  if (!opt.tokens.empty()) {
    ids = parse_token_list(opt.tokens);
  } else {
    SKV_CHECK(!opt.prompt.empty(), "give --prompt TEXT or --tokens 1,2,3");
    ids = tokenizer->encode(opt.prompt);
    // Models see BOS first in training; without it their attention sinks shift.
    if (tokenizer->bos_id) ids.insert(ids.begin(), *tokenizer->bos_id);
  }
  if (!opt.logits_out.empty()) {
    at::Tensor logits = model.forward(at::tensor(ids, at::kLong).view({1, -1}));
    write_npy(opt.logits_out, logits.squeeze(0).to(at::kFloat));
    spdlog::info("wrote logits [{}, {}] to {}", ids.size(), model.config().vocab_size,
                 opt.logits_out);
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int64_t> out = model.generate_greedy(ids, opt.max_new, model.config().eos_token_id);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (tokenizer) std::cout << tokenizer->decode(out) << "\n";
  std::cout << "tokens:";
  for (int64_t t : out) std::cout << " " << t;
  std::cout << "\n";
  spdlog::info("{} prompt tokens, {} generated in {:.2f} s", ids.size(), out.size(), secs);
}

}  // namespace

void register_run_command(CLI::App& app) {
  auto opt = std::make_shared<RunOptions>();
  CLI::App* sub =
      app.add_subcommand("run", "Greedy continuation of a prompt; optionally dump logits");
  sub->add_option("model_dir", opt->model_dir, "Hugging Face model directory")->required();
  auto* prompt =
      sub->add_option("--prompt", opt->prompt, "Prompt text (tokenized by the model's tokenizer)");
  sub->add_option("--tokens", opt->tokens, "Prompt as comma-separated token ids")->excludes(prompt);
  sub->add_option("--max-new", opt->max_new, "Tokens to generate")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--logits-out", opt->logits_out,
                  "Write float32 logits [tokens, vocab] of the prompt to this .npy file");
  sub->add_option("--threads", opt->threads, "Intra-op threads (0: every core)")
      ->capture_default_str();
  sub->add_option("--device", opt->device, "Compute device (cpu, cuda, cuda:1)")
      ->capture_default_str();
  sub->add_option("--dtype", opt->dtype,
                  "Weights and compute: float32, bfloat16 or float16 (norms and softmax "
                  "accumulate in float32)")
      ->capture_default_str();
  sub->callback([opt] { run(*opt); });
}

}  // namespace spindlekv::cli
