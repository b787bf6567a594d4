#include "test_util.h"

#include "device_util.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <optional>

#include <ATen/ATen.h>

#include "core/atomic_file.h"
#include "model/llama_model.h"
#include "runtime/artifact.h"

namespace spindlekv::testutil {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path_ = (std::filesystem::temp_directory_path() /
           ("spindlekv-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
              .string();
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::shared_ptr<Artifact> random_artifact(const ModelConfig& c, uint64_t seed) {
  auto a = std::make_shared<Artifact>();
  a->num_layers = c.num_layers;
  a->num_heads = c.num_heads;
  a->num_kv_heads = c.num_kv_heads;
  a->head_dim = c.head_dim;
  at::manual_seed(seed);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    ArtifactLayer L;
    L.key_codebook = at::randn({c.num_kv_heads, 16, c.head_dim});
    L.key_codebook /= L.key_codebook.norm(2, -1, true);
    L.value_codebook = at::randn({1, 16, c.head_dim});
    L.value_codebook /= L.value_codebook.norm(2, -1, true);
    L.key_sizes.assign(c.num_kv_heads, 16);
    L.value_sizes = {16};
    L.key_coverage.assign(c.num_kv_heads, 0.5);
    L.value_coverage = {0.5};
    a->layers.push_back(L);
  }
  a->pyramid.context_ratios = {0.0, 1.0};
  a->pyramid.fractions = {std::vector<double>(c.num_layers, 0.0),
                          std::vector<double>(c.num_layers, 1.0)};
  a->calibrated = a->pyramid;
  return a;
}

c10::Device test_device() {
  const char* name = std::getenv("SPINDLEKV_TEST_DEVICE");
  if (name == nullptr || *name == '\0') return c10::kCPU;
  std::optional<c10::Device> device;
  try {
    device = c10::Device(name);
  } catch (const std::exception& e) {
    SKV_THROW(kInvalidInput, "SPINDLEKV_TEST_DEVICE='", name, "' is not a device: ", e.what());
  }
  if (device->is_cuda()) {
    SKV_CHECK(at::hasCUDA(), "SPINDLEKV_TEST_DEVICE='", name,
              "' but this LibTorch build has no CUDA device");
  }
  return *device;
}

std::shared_ptr<const RowCoder> bind_row_codec(const std::string& name, int64_t kv_heads,
                                               int64_t head_dim, KvSide side, StorageDtype dtype) {
  RowCodecContext c;
  c.side = side;
  c.kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.dtype = dtype;
  return parse_row_codec(name)->bind(c);
}

ModelConfig tiny_config(int64_t heads, int64_t kv_heads, int64_t head_dim) {
  ModelConfig c;
  c.vocab_size = 37;
  c.hidden_size = 24;
  c.intermediate_size = 40;
  c.num_layers = 2;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-5;
  c.rope.theta = 10000.0;
  return c;
}

void write_byte_model(const std::string& dir, uint64_t seed) {
  ModelConfig c = tiny_config(4, 2, 8);
  c.vocab_size = 258;
  c.max_position_embeddings = 64;
  c.bos_token_id = 256;
  c.eos_token_id = 257;
  LlamaModel::random(c, seed, 0.2).save(dir, at::kFloat);
  write_file_atomically(
      dir + "/tokenizer.json",
      R"({"spindlekv_tokenizer": "byte", "bos_token_id": 256, "eos_token_id": 257})");
}

void write_sample_text(const std::string& path, int repeats) {
  std::string body;
  for (int i = 0; i < repeats; ++i) {
    body += "In the beginning " + std::to_string(i) + " was the word, and the word was light. ";
  }
  write_file_atomically(path, body);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace spindlekv::testutil
