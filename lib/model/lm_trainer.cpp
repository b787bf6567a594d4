#include "model/lm_trainer.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>
// clip_grad.h uses torch::Tensor without including what defines it.
#include <torch/nn/utils/clip_grad.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "model/tokenizer.h"

namespace spindlekv {
namespace {

struct Batch {
  at::Tensor inputs;   // [B, T] int64
  at::Tensor targets;  // [B, T] int64
  at::Tensor weights;  // [B, T] float32
  at::Tensor answer;   // [B, T] bool: the target is an answer token
};

int64_t seq_len_at(const LmTrainingParameters& p, int64_t step) {
  const double f = static_cast<double>(step) / std::max<int64_t>(1, p.steps);
  if (f >= p.growth_fraction) return p.max_seq_len;
  // Doublings from min to max spread evenly over the growth phase.
  const int64_t doublings =
      static_cast<int64_t>(std::round(std::log2(double(p.max_seq_len) / p.min_seq_len)));
  const int64_t stage = static_cast<int64_t>(f / p.growth_fraction * (doublings + 1));
  return std::min(p.max_seq_len, p.min_seq_len << std::min(stage, doublings));
}

double lr_at(const LmTrainingParameters& p, int64_t step) {
  if (step < p.warmup_steps) return p.learning_rate * (step + 1) / p.warmup_steps;
  const double f = double(step - p.warmup_steps) / std::max<int64_t>(1, p.steps - p.warmup_steps);
  const double cosine = 0.5 * (1 + std::cos(M_PI * std::min(1.0, f)));
  return p.learning_rate * (p.min_lr_fraction + (1 - p.min_lr_fraction) * cosine);
}

Batch make_batch(const SampleSource& samples, std::mt19937_64& rng, const LmTrainingParameters& p,
                 int64_t seq_len) {
  const int64_t B = std::max<int64_t>(1, p.tokens_per_step / seq_len);
  // T + 1 ids per row: inputs are [0, T), targets [1, T].
  at::Tensor rows = at::zeros({B, seq_len + 1}, at::kLong);
  at::Tensor weights = at::zeros({B, seq_len}, at::kFloat);
  at::Tensor answer = at::zeros({B, seq_len}, at::kBool);
  for (int64_t b = 0; b < B; ++b) {
    TrainingSample s = samples(rng, seq_len);
    const int64_t n = std::min<int64_t>(seq_len, static_cast<int64_t>(s.ids.size()));
    int64_t* data = rows[b].data_ptr<int64_t>();
    data[0] = p.bos_token;
    std::copy(s.ids.begin(), s.ids.begin() + n, data + 1);
    // Id i of the sample is the target at input position i (after BOS).
    weights[b].narrow(0, 0, n).fill_(1.0);
    if (s.answer_begin >= 0 && s.answer_begin < n) {
      const int64_t len = std::min(s.answer_length, n - s.answer_begin);
      weights[b].narrow(0, s.answer_begin, len).fill_(p.answer_loss_weight);
      answer[b].narrow(0, s.answer_begin, len).fill_(true);
    }
  }
  return {rows.narrow(1, 0, seq_len).contiguous(), rows.narrow(1, 1, seq_len).contiguous(), weights,
          answer};
}

// The parameters that must agree for a saved state to continue a run.
nlohmann::json schedule_json(const LmTrainingParameters& p) {
  return {{"steps", p.steps},
          {"tokens_per_step", p.tokens_per_step},
          {"min_seq_len", p.min_seq_len},
          {"max_seq_len", p.max_seq_len},
          {"seed", p.seed},
          {"growth_fraction", p.growth_fraction},
          {"learning_rate", p.learning_rate},
          {"min_lr_fraction", p.min_lr_fraction},
          {"warmup_steps", p.warmup_steps},
          {"weight_decay", p.weight_decay},
          {"grad_clip", p.grad_clip},
          {"answer_loss_weight", p.answer_loss_weight},
          {"passkey_fraction", p.passkey_fraction},
          {"multikey_fraction", p.multikey_fraction},
          {"digits", p.tasks.digits},
          {"multikey_pairs", p.tasks.multikey_pairs},
          {"bos_token", p.bos_token},
          {"data_signature", p.data_signature}};
}

// The keys every saved state has (the first version's); later keys are
// checked when present.
bool required_key(const std::string& key) {
  return key == "steps" || key == "tokens_per_step" || key == "min_seq_len" ||
         key == "max_seq_len" || key == "seed";
}

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kOptimizerFile = "optimizer.pt";

}  // namespace

SampleSource byte_recipe_samples(const FillerText& corpus, const LmTrainingParameters& p) {
  return [&corpus, p](std::mt19937_64& rng, int64_t seq_len) {
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    const double u = uniform(rng);
    const size_t body = static_cast<size_t>(seq_len);  // bytes after BOS
    const size_t answer_bytes = static_cast<size_t>(p.tasks.digits);
    const size_t prompt_bytes = body - std::min(body, answer_bytes + 1);
    // Sequences too short for a task (early, short stages) stay plain text.
    const bool task = u < p.passkey_fraction ? prompt_bytes >= passkey_min_bytes(p.tasks)
                      : u < p.passkey_fraction + p.multikey_fraction
                          ? prompt_bytes >= multikey_min_bytes(p.tasks)
                          : false;
    std::string text;
    TrainingSample out;
    if (task) {
      RetrievalSample s =
          u < p.passkey_fraction
              ? make_passkey_sample(corpus, rng, prompt_bytes, uniform(rng), p.tasks)
              : make_multikey_sample(corpus, rng, prompt_bytes, uniform(rng), p.tasks);
      out.answer_begin = static_cast<int64_t>(s.prompt.size());
      out.answer_length = static_cast<int64_t>(s.answer.size());
      text = s.prompt + s.answer + "\n";
    } else {
      text = corpus.window(rng, body);
    }
    text.resize(body, ' ');
    out.ids.assign(text.begin(), text.end());
    for (auto& id : out.ids) id &= 0xff;  // bytes as unsigned
    return out;
  };
}

TokenCorpus::TokenCorpus(const std::string& text, const Tokenizer& tokenizer) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find("\n\n", std::min(text.size(), pos + 65536));
    end = end == std::string::npos ? text.size() : end + 2;
    for (int64_t id : tokenizer.encode(text.substr(pos, end - pos))) {
      ids_.push_back(static_cast<int32_t>(id));
    }
    pos = end;
  }
  SKV_CHECK_GE(ids_.size(), size_t{64}, "the training text is too short: ", ids_.size(), " tokens");
}

std::vector<int64_t> TokenCorpus::window(std::mt19937_64& rng, int64_t length) const {
  SKV_CHECK_LE(length, size(), "corpus window of ", length, " tokens exceeds the corpus of ",
               size());
  std::uniform_int_distribution<int64_t> start(0, size() - length);
  const int64_t s = start(rng);
  return std::vector<int64_t>(ids_.begin() + s, ids_.begin() + s + length);
}

struct LmTrainer::Impl {
  LlamaModel& model;
  SampleSource samples;
  LmTrainingParameters p;
  std::vector<at::Tensor> params;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::mt19937_64 rng;
  int64_t step = 0;
};

LmTrainer::LmTrainer(LlamaModel& model, SampleSource samples, const LmTrainingParameters& p)
    : impl_(std::make_unique<Impl>(
          Impl{model, std::move(samples), p, {}, nullptr, std::mt19937_64(p.seed), 0})) {
  SKV_CHECK_LE(p.max_seq_len, model.config().max_position_embeddings,
               "max_seq_len exceeds the model's max_position_embeddings");
  SKV_CHECK_GE(p.max_seq_len, p.min_seq_len, "max_seq_len must be >= min_seq_len");
  SKV_CHECK_GT(p.steps, 0, "steps must be positive");
  SKV_CHECK(p.passkey_fraction >= 0 && p.multikey_fraction >= 0 &&
                p.passkey_fraction + p.multikey_fraction <= 1,
            "task fractions must be non-negative and sum to at most 1");
  for (auto& [name, t] : model.named_parameters()) impl_->params.push_back(t);
  impl_->optimizer = std::make_unique<torch::optim::AdamW>(
      impl_->params,
      torch::optim::AdamWOptions(p.learning_rate).weight_decay(p.weight_decay).betas({0.9, 0.95}));
}

LmTrainer::~LmTrainer() = default;

int64_t LmTrainer::step() const { return impl_->step; }

double LmTrainer::run(const std::function<void(const LmTrainingProgress&)>& on_step) {
  Impl& m = *impl_;
  const LmTrainingParameters& p = m.p;
  for (auto& t : m.params) t.requires_grad_(true);
  std::deque<double> recent;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t last = p.stop_after > 0 ? std::min(p.stop_after, p.steps) : p.steps;
  while (m.step < last) {
    const int64_t T = seq_len_at(p, m.step);
    const double lr = lr_at(p, m.step);
    for (auto& group : m.optimizer->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    const auto ts = std::chrono::steady_clock::now();
    Batch batch = make_batch(m.samples, m.rng, p, T);
    const c10::Device dev = m.model.device();
    batch.targets = batch.targets.to(dev);
    batch.weights = batch.weights.to(dev);
    at::Tensor logits = m.model.forward(batch.inputs);
    at::Tensor ce = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}),
                                           batch.targets.reshape({-1}), {}, at::Reduction::None);
    at::Tensor w = batch.weights.reshape({-1});
    at::Tensor loss = (ce * w).sum() / w.sum();
    m.optimizer->zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(m.params, p.grad_clip);
    m.optimizer->step();
    const at::Tensor answer = batch.answer.reshape({-1}).to(dev);
    const int64_t answer_tokens = answer.sum().item<int64_t>();

    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    LmTrainingProgress prog;
    prog.step = m.step;
    prog.seq_len = T;
    prog.loss = loss.item<double>();
    prog.answer_tokens = answer_tokens;
    if (answer_tokens > 0) {
      prog.answer_loss = ce.detach().masked_select(answer).mean().item<double>();
      const at::Tensor hit =
          logits.detach().reshape({-1, logits.size(-1)}).argmax(-1).eq(batch.targets.reshape({-1}));
      prog.answer_accuracy = hit.masked_select(answer).to(at::kFloat).mean().item<double>();
    }
    prog.learning_rate = lr;
    prog.tokens_per_second = batch.inputs.numel() / secs;
    prog.elapsed_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    SKV_CHECK(std::isfinite(prog.loss), "training diverged at step ", m.step, " (loss ", prog.loss,
              "); lower the learning rate");
    recent.push_back(prog.loss);
    if (recent.size() > 50) recent.pop_front();
    ++m.step;  // a state saved in on_step continues with the next step
    if (on_step) on_step(prog);
  }
  for (auto& t : m.params) t.requires_grad_(false);
  return std::accumulate(recent.begin(), recent.end(), 0.0) / std::max<size_t>(1, recent.size());
}

void LmTrainer::save_state(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  const std::string opt = dir + "/" + kOptimizerFile;
  {
    torch::serialize::OutputArchive archive;
    impl_->optimizer->save(archive);
    // The step ties this file to trainer_state.json: a crash between the two
    // renames leaves a pair that load_state refuses.
    archive.write("trainer/step", at::tensor({impl_->step}, at::kLong), /*is_buffer=*/true);
    // float32 weights: a checkpoint's model.safetensors may be rounded to 16 bits.
    for (const auto& [name, t] : impl_->model.named_parameters()) {
      archive.write("weights/" + name, t.detach(), /*is_buffer=*/true);
    }
    archive.save_to(opt + ".tmp");
  }
  std::filesystem::rename(opt + ".tmp", opt);
  std::ostringstream rng;
  rng << impl_->rng;
  nlohmann::json state = {
      {"step", impl_->step}, {"rng", rng.str()}, {"schedule", schedule_json(impl_->p)}};
  write_file_atomically(dir + "/" + kStateFile, state.dump(2) + "\n");
}

void LmTrainer::load_state(const std::string& dir) {
  const std::string path = dir + "/" + kStateFile;
  nlohmann::json state;
  int64_t step = 0;
  std::string rng_text;
  try {
    state = nlohmann::json::parse(read_file(path));
    step = state.at("step").get<int64_t>();
    rng_text = state.at("rng").get<std::string>();
    state.at("schedule");
  } catch (const nlohmann::json::exception& e) {
    SKV_THROW(kInvalidInput, path, ": not a trainer state (", e.what(), ")");
  }
  const nlohmann::json want = schedule_json(impl_->p);
  for (const auto& [key, value] : want.items()) {
    if (!state["schedule"].contains(key)) {
      SKV_CHECK(!required_key(key), path, ": no schedule key '", key, "'");
      continue;
    }
    SKV_CHECK(state["schedule"][key] == value, path, ": schedule key '", key, "' is ",
              state["schedule"][key].dump(), " but this run has ", value.dump(),
              "; continue with the options of the saved run");
  }
  SKV_CHECK(step >= 0 && step <= impl_->p.steps, path, ": step ", step, " outside 0..",
            impl_->p.steps);
  const std::string opt = dir + "/" + kOptimizerFile;
  SKV_CHECK(std::filesystem::exists(opt), opt, " is missing: ", dir,
            " holds weights but no optimiser state to continue from");
  const c10::Device device = impl_->model.device();
  torch::serialize::InputArchive archive;
  archive.load_from(opt, device);
  at::Tensor saved_step;
  if (archive.try_read("trainer/step", saved_step, true)) {
    SKV_CHECK(saved_step.item<int64_t>() == step, "torn checkpoint in ", dir, ": ", opt,
              " is at step ", saved_step.item<int64_t>(), ", ", path, " at step ", step);
  }
  impl_->optimizer->load(archive);
  {
    at::NoGradGuard no_grad;
    const auto named = impl_->model.named_parameters();
    at::Tensor probe;
    // A state without weights (an older checkpoint) continues from the
    // model's own weights, as loaded by the caller.
    const bool has_weights = archive.try_read("weights/" + named.front().first, probe, true);
    if (has_weights) {
      for (const auto& [name, t] : named) {
        at::Tensor saved;
        SKV_CHECK(archive.try_read("weights/" + name, saved, true), opt,
                  ": no float32 weights of '", name, "'");
        SKV_CHECK(saved.sizes() == t.sizes(), opt, ": weights of '", name, "' have shape ",
                  saved.sizes(), ", the model ", t.sizes());
        at::Tensor target = t;  // shares storage with the model's parameter
        target.copy_(saved);
      }
    }
  }
  std::istringstream rng(rng_text);
  rng >> impl_->rng;
  SKV_CHECK(!rng.fail(), path, ": key 'rng' is not a generator state");
  impl_->step = step;
}

double bits_per_byte(const LlamaModel& model, const std::string& text, int64_t window,
                     int64_t bos_token) {
  SKV_CHECK_GT(window, 1, "window must exceed one byte");
  SKV_CHECK_GE(static_cast<int64_t>(text.size()), window, "text shorter than one window");
  c10::InferenceMode guard;
  double nats = 0;
  int64_t count = 0;
  for (size_t start = 0; start + window <= text.size(); start += window) {
    std::vector<int64_t> ids = {bos_token};
    for (int64_t i = 0; i < window; ++i) ids.push_back(static_cast<unsigned char>(text[start + i]));
    at::Tensor t = at::tensor(ids, at::kLong).view({1, -1});
    at::Tensor logits = model.forward(t.narrow(1, 0, window));
    // Score bytes 1..window-1 of the window (byte 0 follows only BOS).
    at::Tensor lp = at::log_softmax(logits[0].narrow(0, 1, window - 1), -1);
    at::Tensor tgt = t[0].narrow(0, 2, window - 1);
    nats -= lp.gather(1, tgt.unsqueeze(1)).sum().item<double>();
    count += window - 1;
  }
  return nats / count / std::log(2.0);
}

double bits_per_byte(const LlamaModel& model, const Tokenizer& tokenizer, const std::string& text,
                     int64_t window, int64_t max_windows) {
  SKV_CHECK_GT(window, 1, "window must exceed one token");
  SKV_CHECK(model.config().bos_token_id.has_value(), "bits per byte needs the model's BOS id");
  c10::InferenceMode guard;
  const std::vector<int64_t> all = tokenizer.encode(text);
  SKV_CHECK_GE(static_cast<int64_t>(all.size()), window, "text shorter than one window of ", window,
               " tokens");
  double nats = 0;
  int64_t bytes = 0;
  for (int64_t start = 0, n = 0;
       start + window <= static_cast<int64_t>(all.size()) && n < max_windows;
       start += window, ++n) {
    std::vector<int64_t> ids = {*model.config().bos_token_id};
    ids.insert(ids.end(), all.begin() + start, all.begin() + start + window);
    at::Tensor t = at::tensor(ids, at::kLong).view({1, -1});
    at::Tensor logits = model.forward(t.narrow(1, 0, window));
    // Score tokens 1..window-1 of the window (token 0 follows only BOS).
    at::Tensor lp = at::log_softmax(logits[0].narrow(0, 1, window - 1), -1);
    at::Tensor tgt = t[0].narrow(0, 2, window - 1);
    nats -= lp.gather(1, tgt.unsqueeze(1)).sum().item<double>();
    const std::vector<int64_t> w(ids.begin() + 1, ids.end());
    bytes += static_cast<int64_t>(tokenizer.decode(w).size()) -
             static_cast<int64_t>(tokenizer.decode({w[0]}).size());
  }
  SKV_CHECK_GT(bytes, 0, "the scored tokens decode to no bytes");
  return nats / bytes / std::log(2.0);
}

}  // namespace spindlekv
