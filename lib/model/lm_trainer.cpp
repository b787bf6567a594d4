#include "model/lm_trainer.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/optim/adamw.h>
#include <torch/types.h>
// clip_grad.h uses torch::Tensor without including what defines it.
#include <torch/nn/utils/clip_grad.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <numeric>

#include "core/error.h"

namespace spindlekv {
namespace {

struct Batch {
  at::Tensor inputs;   // [B, T] int64
  at::Tensor targets;  // [B, T] int64
  at::Tensor weights;  // [B, T] float32
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

Batch make_batch(const FillerText& corpus, std::mt19937_64& rng, const LmTrainingParameters& p,
                 int64_t seq_len) {
  const int64_t B = std::max<int64_t>(1, p.tokens_per_step / seq_len);
  // T + 1 bytes per row: inputs are [0, T), targets [1, T].
  at::Tensor rows = at::empty({B, seq_len + 1}, at::kLong);
  at::Tensor weights = at::ones({B, seq_len}, at::kFloat);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int64_t b = 0; b < B; ++b) {
    std::string text;
    size_t answer_begin = std::string::npos, answer_len = 0;
    const double u = uniform(rng);
    const size_t body = static_cast<size_t>(seq_len);  // bytes after BOS
    const size_t answer_bytes = static_cast<size_t>(p.tasks.digits);
    const size_t prompt_bytes = body - std::min(body, answer_bytes + 1);
    // Sequences too short for a task (early, short stages) stay plain text.
    const bool task = u < p.passkey_fraction ? prompt_bytes >= passkey_min_bytes(p.tasks)
                      : u < p.passkey_fraction + p.multikey_fraction
                          ? prompt_bytes >= multikey_min_bytes(p.tasks)
                          : false;
    if (task) {
      RetrievalSample s =
          u < p.passkey_fraction
              ? make_passkey_sample(corpus, rng, prompt_bytes, uniform(rng), p.tasks)
              : make_multikey_sample(corpus, rng, prompt_bytes, uniform(rng), p.tasks);
      answer_begin = s.prompt.size();
      answer_len = s.answer.size();
      text = s.prompt + s.answer + "\n";
    } else {
      text = corpus.window(rng, body);
    }
    text.resize(body, ' ');
    auto r = rows[b];
    int64_t* data = r.data_ptr<int64_t>();
    data[0] = p.bos_token;
    for (size_t i = 0; i < body; ++i) data[i + 1] = static_cast<unsigned char>(text[i]);
    if (answer_begin != std::string::npos) {
      // Byte i of the text is the target at input position i (after BOS).
      weights[b]
          .narrow(0, static_cast<int64_t>(answer_begin), static_cast<int64_t>(answer_len))
          .fill_(p.answer_loss_weight);
    }
  }
  return {rows.narrow(1, 0, seq_len).contiguous(), rows.narrow(1, 1, seq_len).contiguous(),
          weights};
}

}  // namespace

double train_language_model(LlamaModel& model, const FillerText& corpus,
                            const LmTrainingParameters& p,
                            const std::function<void(const LmTrainingProgress&)>& on_step) {
  SKV_CHECK_LE(p.max_seq_len, model.config().max_position_embeddings,
               "max_seq_len exceeds the model's max_position_embeddings");
  SKV_CHECK_GE(p.max_seq_len, p.min_seq_len, "max_seq_len must be >= min_seq_len");
  SKV_CHECK_GT(p.steps, 0, "steps must be positive");
  SKV_CHECK(p.passkey_fraction >= 0 && p.multikey_fraction >= 0 &&
                p.passkey_fraction + p.multikey_fraction <= 1,
            "task fractions must be non-negative and sum to at most 1");
  std::vector<at::Tensor> params;
  for (auto& [name, t] : model.named_parameters()) {
    t.requires_grad_(true);
    params.push_back(t);
  }
  torch::optim::AdamW optimizer(
      params,
      torch::optim::AdamWOptions(p.learning_rate).weight_decay(p.weight_decay).betas({0.9, 0.95}));
  std::mt19937_64 rng(p.seed);
  std::deque<double> recent;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t last = p.stop_after > 0 ? std::min(p.stop_after, p.steps) : p.steps;
  for (int64_t step = 0; step < last; ++step) {
    const int64_t T = seq_len_at(p, step);
    const double lr = lr_at(p, step);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    const auto ts = std::chrono::steady_clock::now();
    Batch batch = make_batch(corpus, rng, p, T);
    at::Tensor logits = model.forward(batch.inputs);
    at::Tensor ce = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}),
                                           batch.targets.reshape({-1}), {}, at::Reduction::None);
    at::Tensor w = batch.weights.reshape({-1});
    at::Tensor loss = (ce * w).sum() / w.sum();
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, p.grad_clip);
    optimizer.step();

    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    LmTrainingProgress prog;
    prog.step = step;
    prog.seq_len = T;
    prog.loss = loss.item<double>();
    prog.learning_rate = lr;
    prog.tokens_per_second = batch.inputs.numel() / secs;
    prog.elapsed_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    SKV_CHECK(std::isfinite(prog.loss), "training diverged at step ", step, " (loss ", prog.loss,
              "); lower the learning rate");
    recent.push_back(prog.loss);
    if (recent.size() > 50) recent.pop_front();
    if (on_step) on_step(prog);
  }
  for (auto& t : params) t.requires_grad_(false);
  return std::accumulate(recent.begin(), recent.end(), 0.0) / std::max<size_t>(1, recent.size());
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

}  // namespace spindlekv
