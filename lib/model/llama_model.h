// A Llama-family decoder (Llama 2/3, Mistral, Qwen2) in LibTorch: RMSNorm,
// rotary embeddings, grouped-query attention, SwiGLU MLP, optional q/k/v
// biases, tied embeddings and Mistral's sliding window.
//
// The forward pass is written with ATen operations only, so it runs on any
// device LibTorch has, and gradients flow through it when the weights require
// grad (the reference-model trainer uses the same code).
//
// Shapes, in the model's dtype() (float32 unless loaded in 16 bits) unless
// said otherwise:
//   tokens  [batch, tokens] int64
//   logits  [batch, tokens, vocab]
//   keys, values  [batch, kv_heads, tokens, head_dim]
//   queries       [batch, heads, tokens, head_dim]
//   attention     [batch, heads, rows, cached_tokens]
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/model_config.h"

namespace spindlekv {

class AttentionCache;  // runtime/attention_cache.h

/// One decoder layer's parameters, in the Hugging Face orientation
/// (linear weights are [out_features, in_features]).
struct LayerWeights {
  at::Tensor q_proj, k_proj, v_proj, o_proj;
  at::Tensor q_bias, k_bias, v_bias;  ///< undefined unless attention_bias
  at::Tensor gate_proj, up_proj, down_proj;
  at::Tensor input_norm, post_attention_norm;
};

struct ModelWeights {
  at::Tensor embed_tokens;  ///< [vocab, hidden]
  std::vector<LayerWeights> layers;
  at::Tensor final_norm;  ///< [hidden]
  at::Tensor lm_head;     ///< [vocab, hidden]; the same tensor as embed_tokens when tied
};

/// The plain (uncompressed) KV cache of incremental decoding.
struct KvCache {
  struct Layer {
    at::Tensor keys;       ///< post-RoPE keys [batch, kv_heads, cached, head_dim]
    at::Tensor values;     ///< [batch, kv_heads, cached, head_dim]
    at::Tensor positions;  ///< [cached] int64: the position of each cached token
  };
  std::vector<Layer> layers;
  /// Position the next token will take. Tracked apart from the cache length
  /// because a compressed cache holds fewer tokens than it has seen.
  int64_t next_position = 0;

  /// Tokens cached in `layer` (0 before the first forward).
  int64_t size(int64_t layer) const;
};

/// What a forward pass should record, and what it recorded.
struct ForwardCapture {
  /// Layers to record; empty means every layer.
  std::vector<int64_t> layers;
  bool pre_rope_kv = true;    ///< keys before RoPE, and values
  bool post_rope_qk = false;  ///< queries and keys after RoPE
  /// Attention probabilities of the last N query positions of this call over
  /// every cached key (0: none). Computed for those rows only.
  int64_t attention_rows = 0;

  struct Layer {
    at::Tensor keys_pre_rope;      ///< [batch, kv_heads, tokens, head_dim]
    at::Tensor values;             ///< [batch, kv_heads, tokens, head_dim]
    at::Tensor queries_post_rope;  ///< [batch, heads, tokens, head_dim]
    at::Tensor keys_post_rope;     ///< [batch, kv_heads, tokens, head_dim]
    at::Tensor attention;          ///< [batch, heads, attention_rows, cached_tokens]
    at::Tensor key_positions;      ///< [cached_tokens] int64
  };
  /// Filled by forward(): one entry per model layer, empty for layers not asked.
  std::vector<Layer> out;

  bool wants(int64_t layer) const;
};

/// The model dtype named "float32", "bfloat16" or "float16"; throws
/// kInvalidInput naming `what` (the option or key it came from), the name
/// and the allowed ones.
c10::ScalarType parse_model_dtype(const std::string& name, const std::string& what = "dtype");
/// The name parse_model_dtype takes for a model dtype.
const char* model_dtype_name(c10::ScalarType dtype);
/// The device named "cpu", "cuda" or "cuda:N" that a model can run on here;
/// throws kInvalidInput naming `what` (the option it came from) and the name
/// when it is not such a device, or names CUDA and this LibTorch has none.
c10::Device parse_device(const std::string& name, const std::string& what = "device");

class LlamaModel {
 public:
  LlamaModel(ModelConfig config, ModelWeights weights);

  /// Loads config.json and the safetensors checkpoint from a Hugging Face
  /// model directory, converts to `dtype` (float32, bfloat16 or float16) and
  /// moves to `device`. Throws spindlekv::Error naming the directory, file
  /// and tensor at fault.
  static LlamaModel load(const std::string& model_dir, c10::Device device = c10::kCPU,
                         c10::ScalarType dtype = c10::ScalarType::Float);

  /// Random weights (normal, std `init_std`; norms 1), deterministic for `seed`.
  static LlamaModel random(const ModelConfig& config, uint64_t seed, double init_std = 0.02);

  const ModelConfig& config() const { return config_; }
  ModelWeights& weights() { return weights_; }
  const ModelWeights& weights() const { return weights_; }
  c10::Device device() const;
  /// What the weights, activations and K/V are held in (float32 unless the
  /// model was loaded or converted to bfloat16/float16). In 16 bits, RMSNorm
  /// and softmax accumulate in float32, as Hugging Face's Llama does.
  c10::ScalarType dtype() const;
  /// A model whose weights are copies on `device` (tied embeddings stay tied);
  /// for training or running on a GPU.
  LlamaModel to(c10::Device device) const;
  /// The same, converted to `dtype` (float32, bfloat16 or float16).
  LlamaModel to(c10::Device device, c10::ScalarType dtype) const;
  /// Number of distinct parameters (tied embeddings counted once).
  int64_t parameter_count() const;

  /// Parameters under their Hugging Face names (lm_head omitted when tied).
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;

  /// Writes config.json and model.safetensors (each atomically) into `dir`,
  /// storing weights as `dtype` (float32, float16 or bfloat16).
  void save(const std::string& dir, c10::ScalarType dtype) const;

  /// Runs the decoder on `tokens` (moved to the model's device). With a cache,
  /// the tokens continue the cached sequence and are appended to it. Returns
  /// logits for every position, or only for the last when `last_logits_only`.
  at::Tensor forward(const at::Tensor& tokens, KvCache* cache = nullptr,
                     ForwardCapture* capture = nullptr, bool last_logits_only = false) const;

  /// Runs `tokens` [batch, new] as the continuation of each sequence held by
  /// `cache` (a CompressedCache, or an engine's own), at positions
  /// cache.next_position(b) onwards, attending through the cache; advances
  /// it. Returns logits [batch, new or 1, vocab]. Tokens on the host (as a
  /// decoding loop reads them) are checked there and copied to the device
  /// without waiting for it, so a step over a CompressedCache waits for
  /// nothing (compressed_cache.h says when); tokens on a device cost one
  /// read-back of their range.
  at::Tensor forward_with_cache(const at::Tensor& tokens, AttentionCache& cache,
                                bool last_logits_only = true) const;

  /// Layer `layer`'s pre-RoPE keys and values for every token id, [vocab,
  /// kv_heads, head_dim] each, computed as the forward pass does: for
  /// CompressedCache::hold_as_token_ids. Only layer 0 (whose input is the
  /// token's embedding alone) has such a table; others are refused.
  std::pair<at::Tensor, at::Tensor> token_kv_table(int64_t layer) const;

  /// Greedy continuation of `prompt` by `max_new` tokens (stops at eos_id if
  /// given). Uses an incremental KV cache.
  std::vector<int64_t> generate_greedy(const std::vector<int64_t>& prompt, int64_t max_new,
                                       std::optional<int64_t> eos_id = std::nullopt) const;

 private:
  at::Tensor layer_forward(int64_t index, const at::Tensor& x, const at::Tensor& q_positions,
                           const at::Tensor& cos, const at::Tensor& sin, KvCache* cache,
                           ForwardCapture* capture) const;

  /// The residual, output projection and MLP after attention output o [B, heads, T, d].
  at::Tensor finish_layer(int64_t index, const at::Tensor& x, const at::Tensor& o) const;
  at::Tensor check_tokens(const at::Tensor& tokens) const;

  ModelConfig config_;
  ModelWeights weights_;
  at::Tensor inv_freq_;
};

/// RMSNorm: x / sqrt(mean(x^2) + eps) * weight, over the last dimension,
/// computed in float32 and returned in x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace spindlekv
