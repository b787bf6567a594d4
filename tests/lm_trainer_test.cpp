#include "model/lm_trainer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "core/atomic_file.h"
#include "model/tokenizer.h"
#include "test_util.h"

namespace spindlekv {
namespace {

using testutil::TempDir;

LmTrainingParameters tiny_schedule() {
  LmTrainingParameters p;
  p.steps = 6;
  p.tokens_per_step = 64;
  p.min_seq_len = 8;
  p.max_seq_len = 16;
  p.growth_fraction = 0.5;
  p.warmup_steps = 2;
  p.learning_rate = 1e-2;
  p.bos_token = 1;
  p.seed = 99;
  return p;
}

// Random ids with a short answer span, drawn from the trainer's generator.
TrainingSample random_sample(std::mt19937_64& rng, int64_t length) {
  std::uniform_int_distribution<int64_t> id(2, 36);
  TrainingSample s;
  for (int64_t i = 0; i < length - 2; ++i) s.ids.push_back(id(rng));  // 2 padded positions
  s.answer_begin = length / 2;
  s.answer_length = 2;
  return s;
}

LlamaModel tiny_model() { return LlamaModel::random(testutil::tiny_config(), 5, 0.1); }

void expect_same_weights(const LlamaModel& a, const LlamaModel& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(at::allclose(pa[i].second, pb[i].second, 1e-6, 1e-7)) << pa[i].first;
  }
}

TEST(LmTrainer, ResumedRunEqualsUninterruptedRun) {
  LlamaModel whole = tiny_model();
  LmTrainer(whole, random_sample, tiny_schedule()).run(nullptr);

  TempDir dir;
  LmTrainingParameters first = tiny_schedule();
  first.stop_after = 4;  // across the growth from 8 to 16 tokens
  {
    LlamaModel part = tiny_model();
    LmTrainer trainer(part, random_sample, first);
    int64_t calls = 0;
    trainer.run([&](const LmTrainingProgress& p) { EXPECT_EQ(p.step, calls++); });
    EXPECT_EQ(calls, 4);
    EXPECT_EQ(trainer.step(), 4);
    // 16-bit weights in the checkpoint: the state's float32 copy is what continues.
    part.save(dir.path(), at::kHalf);
    trainer.save_state(dir.path());
  }
  LlamaModel resumed = LlamaModel::load(dir.path());
  LmTrainer trainer(resumed, random_sample, tiny_schedule());
  trainer.load_state(dir.path());
  EXPECT_EQ(trainer.step(), 4);
  std::vector<int64_t> steps;
  trainer.run([&](const LmTrainingProgress& p) { steps.push_back(p.step); });
  EXPECT_EQ(steps, (std::vector<int64_t>{4, 5}));
  expect_same_weights(whole, resumed);
}

TEST(LmTrainer, StateSavedInsideTheStepCallbackContinuesTheRun) {
  // What train-model does with checkpoint_every: save from on_step.
  TempDir dir;
  LlamaModel whole = tiny_model();
  LmTrainer trainer(whole, random_sample, tiny_schedule());
  trainer.run([&](const LmTrainingProgress& p) {
    if (p.step + 1 == 3) {
      whole.save(dir.path(), at::kHalf);
      trainer.save_state(dir.path());
    }
  });
  LlamaModel resumed = LlamaModel::load(dir.path());
  LmTrainer again(resumed, random_sample, tiny_schedule());
  again.load_state(dir.path());
  EXPECT_EQ(again.step(), 3);
  again.run(nullptr);
  expect_same_weights(whole, resumed);
}

TEST(LmTrainer, TornCheckpointIsRefused) {
  TempDir dir, other;
  LlamaModel model = tiny_model();
  LmTrainingParameters p = tiny_schedule();
  p.stop_after = 2;
  LmTrainer trainer(model, random_sample, p);
  trainer.save_state(dir.path());  // step 0
  trainer.run(nullptr);
  trainer.save_state(other.path());  // step 2
  std::filesystem::copy_file(other.file("trainer_state.json"), dir.file("trainer_state.json"),
                             std::filesystem::copy_options::overwrite_existing);
  LmTrainer fresh(model, random_sample, p);
  EXPECT_SKV_ERROR(fresh.load_state(dir.path()), "is at step 0");
}

TEST(LmTrainer, TrainingChangesWeightsAndLowersLoss) {
  LlamaModel model = tiny_model();
  const at::Tensor before = model.weights().layers[0].q_proj.clone();
  LmTrainingParameters p = tiny_schedule();
  p.steps = 40;
  p.min_seq_len = p.max_seq_len = 16;
  // Every sequence is the same: the loss must fall far.
  SampleSource repeat = [](std::mt19937_64&, int64_t length) {
    TrainingSample s;
    for (int64_t i = 0; i < length; ++i) s.ids.push_back(2 + (i * 7) % 30);
    return s;
  };
  std::vector<double> losses;
  LmTrainer(model, repeat, p).run([&](const LmTrainingProgress& pr) { losses.push_back(pr.loss); });
  ASSERT_EQ(losses.size(), 40u);
  EXPECT_LT(losses.back(), 0.5 * losses.front());
  EXPECT_FALSE(at::allclose(before, model.weights().layers[0].q_proj));
  EXPECT_FALSE(model.weights().layers[0].q_proj.requires_grad());  // handed back frozen
}

TEST(LmTrainer, AnswerStatisticsCoverOnlyAnswerTokens) {
  LlamaModel model = tiny_model();
  LmTrainingParameters p = tiny_schedule();
  p.steps = 40;
  p.min_seq_len = p.max_seq_len = 16;  // 4 rows of 16 per step
  p.answer_loss_weight = 1.0;          // the answer is known by position, not by weight
  // A fixed pattern: its answer span becomes predictable.
  SampleSource pattern = [](std::mt19937_64&, int64_t length) {
    TrainingSample s;
    for (int64_t i = 0; i < length; ++i) s.ids.push_back(2 + (i * 7) % 30);
    s.answer_begin = 10;
    s.answer_length = 3;
    return s;
  };
  std::vector<LmTrainingProgress> steps;
  LmTrainer(model, pattern, p).run([&](const LmTrainingProgress& pr) { steps.push_back(pr); });
  ASSERT_EQ(steps.size(), 40u);
  for (const auto& s : steps) EXPECT_EQ(s.answer_tokens, 4 * 3);
  EXPECT_GT(steps.front().answer_loss, 1.0);
  EXPECT_LT(steps.back().answer_loss, 0.5 * steps.front().answer_loss);
  EXPECT_DOUBLE_EQ(steps.back().answer_accuracy, 1.0);

  SampleSource text_only = [](std::mt19937_64& rng, int64_t length) {
    TrainingSample s = random_sample(rng, length);
    s.answer_begin = -1;
    return s;
  };
  p.steps = 1;
  LmTrainer(model, text_only, p).run([](const LmTrainingProgress& pr) {
    EXPECT_EQ(pr.answer_tokens, 0);
    EXPECT_EQ(pr.answer_loss, 0.0);
  });
}

TEST(LmTrainer, LoadStateThrowsWhenScheduleDiffers) {
  TempDir dir;
  LlamaModel model = tiny_model();
  LmTrainer saved(model, random_sample, tiny_schedule());
  saved.save_state(dir.path());
  LmTrainingParameters other = tiny_schedule();
  other.steps = 7;
  LmTrainer trainer(model, random_sample, other);
  EXPECT_SKV_ERROR(trainer.load_state(dir.path()), "schedule key 'steps' is 6 but this run has 7");
  other = tiny_schedule();
  other.seed = 1;
  LmTrainer reseeded(model, random_sample, other);
  EXPECT_SKV_ERROR(reseeded.load_state(dir.path()), "'seed'");
  other = tiny_schedule();
  other.learning_rate = 5e-3;
  LmTrainer faster(model, random_sample, other);
  EXPECT_SKV_ERROR(faster.load_state(dir.path()), "'learning_rate'");
  other = tiny_schedule();
  other.data_signature = "another corpus";
  LmTrainer elsewhere(model, random_sample, other);
  EXPECT_SKV_ERROR(elsewhere.load_state(dir.path()), "'data_signature'");
}

TEST(LmTrainer, LoadStateThrowsWhenStateIsMissingOrBroken) {
  TempDir dir;
  LlamaModel model = tiny_model();
  LmTrainer trainer(model, random_sample, tiny_schedule());
  EXPECT_SKV_ERROR(trainer.load_state(dir.path()), "trainer_state.json");
  trainer.save_state(dir.path());
  std::filesystem::remove(dir.file("optimizer.pt"));
  EXPECT_SKV_ERROR(trainer.load_state(dir.path()), "optimizer.pt is missing");
  write_file_atomically(dir.file("trainer_state.json"), "{not json");
  EXPECT_SKV_ERROR(trainer.load_state(dir.path()), "not a trainer state");
  write_file_atomically(dir.file("trainer_state.json"), R"({"step": 1})");
  EXPECT_SKV_ERROR(trainer.load_state(dir.path()), "not a trainer state");
}

TEST(LmTrainer, BitsPerByteOfTokenizedTextMatchesByteLevelForByteTokenizer) {
  // With the byte tokenizer every token is one byte: both functions agree.
  ModelConfig c = testutil::tiny_config();
  c.vocab_size = 258;
  c.bos_token_id = 256;
  const LlamaModel model = LlamaModel::random(c, 3, 0.1);
  auto tok = make_byte_tokenizer(256, 257);
  std::string text;
  for (int i = 0; i < 20; ++i) text += "the word was light " + std::to_string(i) + ". ";
  const double direct = bits_per_byte(model, text, 32, 256);
  const double via_tokens = bits_per_byte(model, *tok, text, 32, 1000);
  EXPECT_NEAR(direct, via_tokens, 1e-9);
  EXPECT_SKV_ERROR(bits_per_byte(model, *tok, "short", 32), "shorter than one window");
}

}  // namespace
}  // namespace spindlekv
