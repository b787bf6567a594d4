// `spindlekv train-model`: trains a reference model from scratch, byte-level
// (data/reference-model) or with a SentencePiece tokenizer and the task
// mixture of eval/training_mix.h (data/reference-model-v2); see their
// MODEL_CARD.md files. --resume continues a run from its last checkpoint.
#include <ATen/ATen.h>
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/atomic_file.h"
#include "core/blas_kernels.h"
#include "core/error.h"
#include "core/threads.h"
#include "core/version.h"
#include "eval/training_mix.h"
#include "model/lm_trainer.h"
#include "model/tokenizer.h"
#include "yaml_options.h"

namespace spindlekv::cli {
namespace {

struct TrainModelOptions {
  std::string config_path;
  std::string init;    ///< start from this model's weights (architecture options ignored)
  std::string resume;  ///< continue the run saved in this directory (weights + optimiser)
  /// SentencePiece model (tokenizer.model); empty: the byte-level recipe.
  std::string tokenizer;
  std::vector<std::string> mix;  ///< tokenizer recipe: "task:fraction" items
  TrainingMixParameters mix_params;
  std::string text = "data/corpus/train.txt";
  std::string out;
  // Architecture (Llama, byte-level vocabulary + BOS/EOS).
  int64_t layers = 6;
  int64_t hidden = 128;
  int64_t heads = 8;
  int64_t kv_heads = 2;
  int64_t head_dim = 16;
  int64_t intermediate = 352;
  double rope_theta = 10000.0;
  LmTrainingParameters train;
  int64_t log_every = 25;
  int64_t checkpoint_every = 500;  ///< steps between checkpoints into --out (0: none)
  std::string storage_dtype = "float16";
  std::string device = "cpu";  ///< "cpu", or "cuda" with a CUDA build of LibTorch
  int threads = 0;
};

constexpr int64_t kBos = 256, kEos = 257, kVocab = 258;

ModelConfig architecture(const TrainModelOptions& o, const Tokenizer* tok) {
  ModelConfig c;
  c.vocab_size = tok ? tok->vocab_size() : kVocab;
  c.hidden_size = o.hidden;
  c.intermediate_size = o.intermediate;
  c.num_layers = o.layers;
  c.num_heads = o.heads;
  c.num_kv_heads = o.kv_heads;
  c.head_dim = o.head_dim;
  c.max_position_embeddings = o.train.max_seq_len;
  c.rms_norm_eps = 1e-5;
  c.rope.theta = o.rope_theta;
  c.bos_token_id = tok ? tok->bos_id : kBos;
  c.eos_token_id = tok ? tok->eos_id : kEos;
  c.validate();
  return c;
}

void save(const LlamaModel& model, const LmTrainer& trainer, const TrainModelOptions& o,
          const nlohmann::json& log) {
  model.save(o.out, parse_model_dtype(o.storage_dtype, "--storage-dtype"));
  if (o.tokenizer.empty()) {
    nlohmann::json tok = {{"spindlekv_tokenizer", "byte"},
                          {"bos_token_id", kBos},
                          {"eos_token_id", kEos},
                          {"vocab_size", kVocab}};
    write_file_atomically(o.out + "/tokenizer.json", tok.dump(2) + "\n");
  } else if (!std::filesystem::exists(o.out + "/tokenizer.model") ||
             !std::filesystem::equivalent(o.tokenizer, o.out + "/tokenizer.model")) {
    write_file_atomically(o.out + "/tokenizer.model", read_file(o.tokenizer));
  }
  trainer.save_state(o.out);
  write_file_atomically(o.out + "/training_log.json", log.dump(2) + "\n");
}

void run(CLI::App& sub, TrainModelOptions& o) {
  apply_yaml_config(sub, o.config_path);
  const int threads = configure_threads(o.threads);
  spdlog::info("compute: {}", compute_environment());
  SKV_CHECK(o.init.empty() || o.resume.empty(), "--init and --resume exclude each other");
  const std::string text = with_context("reading --text", [&] { return read_file(o.text); });
  std::unique_ptr<Tokenizer> tok;
  SKV_CHECK(!o.tokenizer.empty() || o.mix.empty(),
            "--mix needs --tokenizer (the byte recipe uses --passkey-fraction and "
            "--multikey-fraction)");
  if (!o.tokenizer.empty()) {
    tok = with_context("reading --tokenizer",
                       [&] { return load_sentencepiece_tokenizer(o.tokenizer); });
    SKV_CHECK(tok->bos_id.has_value(), "--tokenizer '", o.tokenizer, "' has no BOS token");
    o.mix_params.mix = parse_training_mix(o.mix);
    o.mix_params.tasks = o.train.tasks;
    o.mix_params.seed = o.train.seed;
    o.mix_params.min_length = o.train.min_seq_len;
  }
  // What the samples are drawn from; a resume must match it.
  o.train.data_signature = "text " + o.text + " (" + std::to_string(text.size()) + " bytes)";
  if (tok) {
    o.train.data_signature += "; tokenizer " + std::to_string(tok->vocab_size()) + " pieces (" +
                              std::to_string(read_file(o.tokenizer).size()) + " bytes); mix";
    for (const std::string& m : o.mix) o.train.data_signature += " " + m;
    o.train.data_signature +=
        "; text haystacks " + std::to_string(o.mix_params.text_haystack_fraction);
  }
  const std::string from = o.resume.empty() ? o.init : o.resume;
  LlamaModel model = from.empty() ? LlamaModel::random(architecture(o, tok.get()), o.train.seed)
                                  : LlamaModel::load(from);
  if (!from.empty()) {
    const ModelConfig& c = model.config();
    const ModelConfig want = architecture(o, tok.get());
    SKV_CHECK(c.vocab_size == want.vocab_size && c.bos_token_id == want.bos_token_id, "model '",
              from, "' does not match this recipe's vocabulary (vocab ", c.vocab_size, ", BOS ",
              c.bos_token_id.value_or(-1), "; expected vocab ", want.vocab_size, ", BOS ",
              want.bos_token_id.value_or(-1), ")");
    o.layers = c.num_layers, o.hidden = c.hidden_size, o.heads = c.num_heads;
    o.kv_heads = c.num_kv_heads, o.head_dim = c.head_dim, o.intermediate = c.intermediate_size;
    if (c.max_position_embeddings < o.train.max_seq_len) {
      // RoPE has no learned positions: a longer context only needs the limit raised.
      ModelConfig longer = c;
      longer.max_position_embeddings = o.train.max_seq_len;
      model = LlamaModel(longer, model.weights());
    }
    spdlog::info("continuing from the weights of {}", from);
  }
  o.train.bos_token = *model.config().bos_token_id;
  const c10::Device device = parse_device(o.device, "--device");
  if (!device.is_cpu()) model = model.to(device);
  const auto t_corpus = std::chrono::steady_clock::now();
  std::unique_ptr<FillerText> filler;
  if (!tok) filler = std::make_unique<FillerText>(text);
  SampleSource samples =
      tok ? training_mix_samples(text, *tok, o.mix_params) : byte_recipe_samples(*filler, o.train);
  spdlog::info("training data ready in {:.1f} s",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t_corpus).count());
  LmTrainer trainer(model, samples, o.train);
  nlohmann::json log;
  if (!o.resume.empty()) {
    trainer.load_state(o.resume);
    log = nlohmann::json::parse(read_file(o.resume + "/training_log.json"));
    spdlog::info("resuming at step {} of {}", trainer.step(), o.train.steps);
    const int64_t end =
        o.train.stop_after > 0 ? std::min(o.train.stop_after, o.train.steps) : o.train.steps;
    if (trainer.step() >= end) {
      spdlog::info("{} is already at step {}: nothing to train", o.resume, trainer.step());
      return;
    }
  } else {
    log = {{"tool_version", version_string()},
           {"init", o.init},
           {"text", o.text},
           {"text_bytes", text.size()},
           {"tokenizer", o.tokenizer},
           {"seed", o.train.seed},
           {"steps", o.train.steps},
           {"tokens_per_step", o.train.tokens_per_step},
           {"min_seq_len", o.train.min_seq_len},
           {"max_seq_len", o.train.max_seq_len},
           {"learning_rate", o.train.learning_rate},
           {"answer_loss_weight", o.train.answer_loss_weight},
           {"parameters", model.parameter_count()},
           {"training_seconds", 0.0},
           {"loss_curve", nlohmann::json::array()}};
    if (tok) {
      log["mix"] = o.mix;
      log["text_haystack_fraction"] = o.mix_params.text_haystack_fraction;
    } else {
      log["passkey_fraction"] = o.train.passkey_fraction;
      log["multikey_fraction"] = o.train.multikey_fraction;
      log["multikey_pairs"] = o.train.tasks.multikey_pairs;
    }
  }
  log["tool_version"] = version_string();
  log["pieces"].push_back(
      {{"from_step", trainer.step()}, {"threads", threads}, {"compute", compute_environment()}});
  spdlog::info(
      "training {} parameters: {} layers, hidden {}, {} heads / {} kv heads x {}, "
      "context {}, {} steps, {} threads",
      model.parameter_count(), o.layers, o.hidden, o.heads, o.kv_heads, o.head_dim,
      o.train.max_seq_len, o.train.steps, threads);
  std::filesystem::create_directories(o.out);
  const double seconds_before = log.value("training_seconds", 0.0);
  double window_loss = 0, window_answer_loss = 0, window_answer_hits = 0;
  int64_t window_n = 0, window_answer_tokens = 0;
  const int64_t last =
      o.train.stop_after > 0 ? std::min(o.train.stop_after, o.train.steps) : o.train.steps;
  const double final_loss = trainer.run([&](const LmTrainingProgress& p) {
    window_loss += p.loss;
    ++window_n;
    window_answer_loss += p.answer_loss * p.answer_tokens;
    window_answer_hits += p.answer_accuracy * p.answer_tokens;
    window_answer_tokens += p.answer_tokens;
    log["training_seconds"] = seconds_before + p.elapsed_seconds;
    if ((p.step + 1) % o.log_every == 0 || p.step + 1 == last) {
      nlohmann::json point = {{"step", p.step + 1},
                              {"seq_len", p.seq_len},
                              {"loss", window_loss / window_n},
                              {"seconds", seconds_before + p.elapsed_seconds}};
      std::string answers;
      if (window_answer_tokens > 0) {
        const double a_loss = window_answer_loss / window_answer_tokens;
        const double a_acc = window_answer_hits / window_answer_tokens;
        point["answer_loss"] = a_loss;
        point["answer_accuracy"] = a_acc;
        answers = fmt::format("  answer loss {:.3f} acc {:.3f}", a_loss, a_acc);
      }
      spdlog::info("step {}/{}  seq {}  loss {:.4f}{}  lr {:.2e}  {:.0f} tok/s  {:.0f} s",
                   p.step + 1, o.train.steps, p.seq_len, window_loss / window_n, answers,
                   p.learning_rate, p.tokens_per_second, p.elapsed_seconds);
      log["loss_curve"].push_back(std::move(point));
      window_loss = window_answer_loss = window_answer_hits = 0;
      window_n = window_answer_tokens = 0;
    }
    if (o.checkpoint_every > 0 && (p.step + 1) % o.checkpoint_every == 0 && p.step + 1 != last) {
      log["checkpoint_step"] = p.step + 1;
      save(model, trainer, o, log);
    }
  });
  log["final_loss"] = final_loss;
  log["checkpoint_step"] = trainer.step();
  save(model, trainer, o, log);
  spdlog::info("saved {} at step {} (mean loss of the last steps {:.4f} nats/token)", o.out,
               trainer.step(), final_loss);
}

}  // namespace

void register_train_model_command(CLI::App& app) {
  auto o = std::make_shared<TrainModelOptions>();
  CLI::App* sub = app.add_subcommand(
      "train-model",
      "Train a reference model from scratch, byte-level or with a SentencePiece tokenizer "
      "(LibTorch autograd)");
  add_config_option(*sub, o->config_path);
  sub->add_option(
      "--init", o->init,
      "Start a new run (a next stage) from this model's weights (its architecture wins)");
  sub->add_option("--resume", o->resume,
                  "Continue the run checkpointed in this directory (weights, optimiser, step, "
                  "data); pass the run's own options");
  sub->add_option("--tokenizer", o->tokenizer,
                  "SentencePiece model (tokenizer.model): train with it and --mix instead of the "
                  "byte-level recipe");
  sub->add_option("--mix", o->mix,
                  "With --tokenizer: task:fraction items (passkey, multikey, RULER tasks); the "
                  "rest is plain text")
      ->delimiter(',');
  sub->add_option("--text-haystack-fraction", o->mix_params.text_haystack_fraction,
                  "With --tokenizer: share of RULER NIAH samples whose haystack is corpus text")
      ->capture_default_str();
  sub->add_option("--word-list", o->mix_params.word_list,
                  "With --tokenizer: word list of RULER keys")
      ->capture_default_str();
  sub->add_option("--text", o->text, "Training text (plain UTF-8)")->capture_default_str();
  sub->add_option("--out", o->out, "Output model directory (Hugging Face layout)")->required();
  sub->add_option("--layers", o->layers, "Decoder layers")->capture_default_str();
  sub->add_option("--hidden", o->hidden, "Hidden size")->capture_default_str();
  sub->add_option("--heads", o->heads, "Query heads")->capture_default_str();
  sub->add_option("--kv-heads", o->kv_heads, "Key/value heads (GQA)")->capture_default_str();
  sub->add_option("--head-dim", o->head_dim, "Head size")->capture_default_str();
  sub->add_option("--intermediate", o->intermediate, "MLP size")->capture_default_str();
  sub->add_option("--rope-theta", o->rope_theta, "RoPE base")->capture_default_str();
  sub->add_option("--steps", o->train.steps, "Optimiser steps")->capture_default_str();
  sub->add_option("--stop-after", o->train.stop_after,
                  "Stop after N steps, keeping the schedules of --steps (0: all)")
      ->capture_default_str();
  sub->add_option("--tokens-per-step", o->train.tokens_per_step, "Tokens per step")
      ->capture_default_str();
  sub->add_option("--max-seq-len", o->train.max_seq_len, "Trained context length")
      ->capture_default_str();
  sub->add_option("--min-seq-len", o->train.min_seq_len, "First sequence length")
      ->capture_default_str();
  sub->add_option("--growth-fraction", o->train.growth_fraction,
                  "Share of steps over which sequences grow")
      ->capture_default_str();
  sub->add_option("--learning-rate", o->train.learning_rate, "Peak learning rate")
      ->capture_default_str();
  sub->add_option("--warmup-steps", o->train.warmup_steps, "Warm-up steps")->capture_default_str();
  sub->add_option("--weight-decay", o->train.weight_decay, "AdamW weight decay")
      ->capture_default_str();
  sub->add_option("--passkey-fraction", o->train.passkey_fraction, "Share of pass-key samples")
      ->capture_default_str();
  sub->add_option("--multikey-fraction", o->train.multikey_fraction, "Share of multi-key samples")
      ->capture_default_str();
  sub->add_option("--multikey-pairs", o->train.tasks.multikey_pairs, "Facts per multi-key sample")
      ->capture_default_str();
  sub->add_option("--answer-loss-weight", o->train.answer_loss_weight,
                  "Loss weight of answer bytes")
      ->capture_default_str();
  sub->add_option("--seed", o->train.seed, "Seed of weights and data")->capture_default_str();
  sub->add_option("--log-every", o->log_every, "Steps between log lines")->capture_default_str();
  sub->add_option("--checkpoint-every", o->checkpoint_every, "Steps between checkpoints (0: none)")
      ->capture_default_str();
  sub->add_option("--storage-dtype", o->storage_dtype, "float32, float16 or bfloat16")
      ->capture_default_str();
  sub->add_option("--device", o->device, "cpu, or cuda with a CUDA build of LibTorch")
      ->capture_default_str();
  sub->add_option("--threads", o->threads, "Intra-op threads (0: every core)")
      ->capture_default_str();
  sub->callback([sub, o] { run(*sub, *o); });
}

}  // namespace spindlekv::cli
