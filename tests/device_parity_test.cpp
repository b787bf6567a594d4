// The model and the compressed cache on the device of $SPINDLEKV_TEST_DEVICE
// (scripts/gpu_check.sh sets "cuda") against the same computation on the
// CPU: logits, greedy tokens, held bytes and a saved cache. The comparisons
// skip when the test device is the CPU itself (CI has no GPU): there is
// nothing to compare. The read-back count runs on either.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "device_util.h"
#include "model/compressed_prefill.h"
#include "model/llama_model.h"
#include "op_counter.h"
#include "runtime/compressed_cache.h"
#include "test_util.h"

namespace spindlekv {
namespace {

using testutil::random_artifact;
using testutil::TempDir;
using testutil::test_device;

#define SKIP_ON_CPU()                                                                \
  if (test_device().is_cpu()) {                                                      \
    GTEST_SKIP() << "SPINDLEKV_TEST_DEVICE is the CPU: no second device to compare"; \
  }

const std::string kText =
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a "
    "single step. The key is 48213. Remember it: 48213. ";

std::vector<int64_t> prompt_tokens() {
  std::vector<int64_t> out;
  for (unsigned char c : kText + kText) out.push_back(c);
  return out;
}

LlamaModel reference_model(c10::Device device) {
  return LlamaModel::load(std::string(SPINDLEKV_SOURCE_DIR) + "/data/reference-model", device);
}

// Float32 and no TF32: the device computes what the CPU computes, up to
// summation order.
constexpr double kTolerance = 1e-4;

void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  const at::Tensor g = got.to(at::kCPU).to(at::kFloat), w = want.to(at::kCPU).to(at::kFloat);
  ASSERT_EQ(g.sizes(), w.sizes()) << what;
  EXPECT_TRUE(at::allclose(g, w, kTolerance, kTolerance))
      << what << ": max difference " << (g - w).abs().max().item<double>();
}

// Sets an environment variable for one scope, restoring it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(DeviceParity, TestDeviceIsTheCpuWhenUnsetAndRefusesWhatIsNoDevice) {
  {
    ScopedEnv env("SPINDLEKV_TEST_DEVICE", nullptr);
    EXPECT_TRUE(test_device().is_cpu());
  }
  {
    ScopedEnv env("SPINDLEKV_TEST_DEVICE", "cpu");
    EXPECT_TRUE(test_device().is_cpu());
  }
  {
    ScopedEnv env("SPINDLEKV_TEST_DEVICE", "graphics-card");
    EXPECT_SKV_ERROR(test_device(), "SPINDLEKV_TEST_DEVICE='graphics-card'");
  }
  if (!at::hasCUDA()) {
    ScopedEnv env("SPINDLEKV_TEST_DEVICE", "cuda");
    EXPECT_SKV_ERROR(test_device(), "has no CUDA device");
  }
}

TEST(DeviceParity, ModelLogitsMatchTheCpuWithAndWithoutACache) {
  SKIP_ON_CPU();
  const LlamaModel cpu = reference_model(c10::kCPU);
  const LlamaModel dev = cpu.to(test_device());
  EXPECT_EQ(dev.device().type(), test_device().type());
  const at::Tensor tokens = at::tensor(prompt_tokens(), at::kLong).view({1, -1});
  expect_close(dev.forward(tokens), cpu.forward(tokens), "prefill logits");
  KvCache cpu_kv, dev_kv;
  cpu.forward(tokens, &cpu_kv);
  dev.forward(tokens, &dev_kv);
  at::Tensor next = at::tensor({int64_t{'A'}}, at::kLong).view({1, 1});
  for (int step = 0; step < 4; ++step) {
    const at::Tensor want = cpu.forward(next, &cpu_kv, nullptr, true).view({-1});
    const at::Tensor got = dev.forward(next, &dev_kv, nullptr, true).view({-1});
    expect_close(got, want, "decode step " + std::to_string(step));
    next = want.argmax().view({1, 1});
  }
}

struct Setting {
  std::string name;
  CompressionParameters params;
};

std::vector<Setting> settings() {
  std::vector<Setting> out;
  for (CodebookMode mode : {CodebookMode::kNone, CodebookMode::kCalibrated,
                            CodebookMode::kJustInTime, CodebookMode::kHybrid}) {
    CompressionParameters p;
    p.storage_dtype = StorageDtype::kFloat32;
    p.reserve_ratio = 0.4;
    p.window = 8;
    p.codebook = mode;
    p.key_threshold = 0.9;
    p.value_threshold = 0.8;
    out.push_back({std::string("evict r 0.4, codebook ") + to_string(mode), p});
  }
  for (const char* q : {"fp8", "kivi4", "tq3", "q4_0"}) {
    CompressionParameters p;
    p.storage_dtype = StorageDtype::kFloat16;
    p.reserve_ratio = 1.0;
    p.codebook = CodebookMode::kNone;
    p.set_codec(q);
    out.push_back({std::string("every token, ") + q, p});
  }
  return out;
}

// Prefills the prompt and decodes `steps` tokens greedily; returns the
// logits of each step [vocab] and fills `tokens`.
std::vector<at::Tensor> decode(const LlamaModel& model, CompressedCache& cache, int steps,
                               std::vector<int64_t>& tokens) {
  std::vector<at::Tensor> logits{prefill_compressed(model, prompt_tokens(), cache, 0).view({-1})};
  for (int s = 0; s < steps; ++s) {
    tokens.push_back(logits.back().argmax().item<int64_t>());
    const at::Tensor next = at::tensor({tokens.back()}, at::kLong).view({1, 1});
    logits.push_back(model.forward_with_cache(next, cache).view({-1}));
  }
  return logits;
}

TEST(DeviceParity, CompressedDecodeMatchesTheCpuInEveryMode) {
  SKIP_ON_CPU();
  const LlamaModel cpu = reference_model(c10::kCPU);
  const LlamaModel dev = cpu.to(test_device());
  const auto artifact = random_artifact(cpu.config(), 3);
  for (const Setting& s : settings()) {
    SCOPED_TRACE(s.name);
    CompressedCache on_cpu(cpu.config().geometry(), 1, s.params, artifact, c10::kCPU);
    CompressedCache on_dev(cpu.config().geometry(), 1, s.params, artifact, test_device());
    std::vector<int64_t> cpu_tokens, dev_tokens;
    const auto want = decode(cpu, on_cpu, 6, cpu_tokens);
    const auto got = decode(dev, on_dev, 6, dev_tokens);
    EXPECT_EQ(dev_tokens, cpu_tokens);
    for (size_t i = 0; i < want.size(); ++i)
      expect_close(got[i], want[i], "step " + std::to_string(i));
    const MemoryReport mc = on_cpu.memory(), md = on_dev.memory();
    EXPECT_EQ(md.held_bytes, mc.held_bytes);
    EXPECT_EQ(md.shared_bytes_total, mc.shared_bytes_total);
    EXPECT_EQ(md.shared_bytes_referenced, mc.shared_bytes_referenced);
  }
}

TEST(DeviceParity, ACacheSavedOnTheDeviceDecodesTheSameOnTheCpu) {
  SKIP_ON_CPU();
  const LlamaModel cpu = reference_model(c10::kCPU);
  const LlamaModel dev = cpu.to(test_device());
  const auto artifact = random_artifact(cpu.config(), 4);
  TempDir dir;
  for (const Setting& s : settings()) {
    SCOPED_TRACE(s.name);
    CompressedCache on_dev(cpu.config().geometry(), 1, s.params, artifact, test_device());
    std::vector<int64_t> tokens;
    decode(dev, on_dev, 3, tokens);
    on_dev.save(dir.file("cache.safetensors"));
    CompressedCache loaded = CompressedCache::load(dir.file("cache.safetensors"),
                                                   cpu.config().geometry(), artifact, c10::kCPU);
    const at::Tensor next = at::tensor({tokens.back()}, at::kLong).view({1, 1});
    expect_close(dev.forward_with_cache(next, on_dev).view({-1}),
                 cpu.forward_with_cache(next, loaded).view({-1}), "step after loading");
  }
}

TEST(DeviceParity, AModelDecodeStepOverACompressedCacheReadsNothingBack) {
  // A step from a token the host holds (as a decoding loop reads it) waits
  // for the device nowhere: the model checks the token on the host and
  // hands the cache its positions there. On the CPU this checks that the
  // same code makes no read; on a GPU, that nothing waits.
  const LlamaModel model = reference_model(c10::kCPU).to(test_device());
  const auto artifact = random_artifact(model.config(), 5);
  for (Setting s : settings()) {
    if (s.params.key_codec != "none") continue;      // coded on the host's schedule
    s.params.extend_codebook_when_decoding = false;  // the ATen path builds entries on the host
    SCOPED_TRACE(s.name);
    CompressedCache cache(model.config().geometry(), 1, s.params, artifact, test_device());
    std::vector<int64_t> tokens;
    decode(model, cache, 1, tokens);
    const at::Tensor next = at::tensor({tokens.back()}, at::kLong).view({1, 1});
    testutil::ReadBackCounter counter;
    model.forward_with_cache(next, cache, true);
    EXPECT_EQ(counter.reads(), 0);
  }
}

}  // namespace
}  // namespace spindlekv
