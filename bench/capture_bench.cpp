// Capture throughput against the bare forward pass over the same sequences,
// measured in the same run (target: capture overhead at most 25%).
//
// Usage: capture_bench [--sequences N] [--seq-len T] [--hidden H] [--layers L]
//                      [--compression-level 0..9]
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "capture/capture_runner.h"
#include "core/atomic_file.h"
#include "core/blas_kernels.h"
#include "core/memory_policy.h"
#include "core/threads.h"
#include "model/llama_model.h"

int main(int argc, char** argv) {
  spindlekv::fix_blas_kernels(argc, argv);  // SPINDLEKV_NO_BLAS_FIX=1 turns it off
  spindlekv::keep_freed_memory_mapped();    // as the CLI does (core/memory_policy.h)
  int64_t sequences = 8, seq_len = 1024, hidden = 256, layers = 6, compression = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (a == "--sequences")
      sequences = v;
    else if (a == "--seq-len")
      seq_len = v;
    else if (a == "--hidden")
      hidden = v;
    else if (a == "--layers")
      layers = v;
    else if (a == "--compression-level")
      compression = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const int threads = spindlekv::configure_threads(0);
  std::printf("machine          %s\n", spindlekv::compute_environment().c_str());
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("spindlekv-capture-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  spindlekv::ModelConfig c;
  c.vocab_size = 258;
  c.hidden_size = hidden;
  c.intermediate_size = hidden * 11 / 4;
  c.num_layers = layers;
  c.num_heads = hidden / 32;
  c.num_kv_heads = std::max<int64_t>(1, c.num_heads / 4);
  c.head_dim = 32;
  c.max_position_embeddings = seq_len;
  c.bos_token_id = 256;
  spindlekv::LlamaModel model = spindlekv::LlamaModel::random(c, 1);
  model.save((dir / "model").string(), at::kFloat);
  spindlekv::write_file_atomically((dir / "model" / "tokenizer.json").string(),
                                   R"({"spindlekv_tokenizer": "byte", "bos_token_id": 256})");
  std::string text;
  while (static_cast<int64_t>(text.size()) < sequences * seq_len + 100) {
    text += "In the beginning God created the heaven and the earth. ";
  }
  spindlekv::write_file_atomically((dir / "text.txt").string(), text);

  // Bare forward over the same sequences (BOS + bytes).
  double forward_s = 0;
  {
    c10::InferenceMode guard;
    for (int64_t s = 0; s < sequences; ++s) {
      std::vector<int64_t> ids = {256};
      for (int64_t i = 0; i < seq_len - 1; ++i)
        ids.push_back((unsigned char)text[s * (seq_len - 1) + i]);
      const auto t0 = std::chrono::steady_clock::now();
      model.forward(at::tensor(ids, at::kLong).view({1, -1}), nullptr, nullptr, true);
      forward_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  spindlekv::CaptureOptions o;
  o.model_dir = (dir / "model").string();
  o.text_paths = {(dir / "text.txt").string()};
  o.out = (dir / "cap.h5").string();
  o.seq_len = seq_len;
  o.max_sequences = sequences;
  o.compression_level = static_cast<int>(compression);
  const auto t0 = std::chrono::steady_clock::now();
  spindlekv::CaptureSummary s = spindlekv::run_capture(o);
  const double capture_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double tokens = static_cast<double>(sequences * seq_len);
  std::printf("threads          %d\n", threads);
  std::printf("model            hidden %lld, %lld layers, %lld heads / %lld kv heads, seq %lld\n",
              (long long)hidden, (long long)layers, (long long)c.num_heads,
              (long long)c.num_kv_heads, (long long)seq_len);
  std::printf("bare forward     %.0f tokens/s\n", tokens / forward_s);
  std::printf(
      "capture          %.0f tokens/s (%lld sequences, deflate level %lld, including model load "
      "and fingerprint)\n",
      tokens / capture_s, (long long)s.sequences, (long long)compression);
  std::printf("overhead         %.0f%% (target <= 25%%)\n", 100.0 * (capture_s / forward_s - 1.0));
  fs::remove_all(dir);
  return 0;
}
