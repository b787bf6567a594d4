// Architecture of a Llama-family decoder, as read from a Hugging Face
// config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/cache_geometry.h"

namespace spindlekv {

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  ///< HF "architectures"[0]
  std::string model_type = "llama";               ///< llama, mistral, qwen2
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;    ///< num_hidden_layers
  int64_t num_heads = 0;     ///< query heads (h)
  int64_t num_kv_heads = 0;  ///< key/value heads (h_g); GQA when < num_heads
  int64_t head_dim = 0;      ///< d_h; hidden_size / num_heads unless given
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  RopeParameters rope;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  ///< q/k/v projections carry biases (Qwen2)
  int64_t sliding_window = 0;   ///< 0 = full attention (Mistral may set 4096)
  std::string torch_dtype = "float32";
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;

  /// Query heads per KV head (h_n).
  int64_t group_size() const { return num_heads / num_kv_heads; }
  /// Bytes of K and V per token over all layers at `bytes_per_element`.
  int64_t kv_bytes_per_token(int64_t bytes_per_element = 2) const {
    return 2 * num_layers * num_kv_heads * head_dim * bytes_per_element;
  }
  /// What a KV cache needs of this model.
  CacheGeometry geometry() const;
  /// Throws kInvalidInput naming the field if the numbers are inconsistent.
  void validate() const;
};

/// Parses config.json text; `source` names the file in error messages.
ModelConfig parse_model_config(const std::string& json_text, const std::string& source);
/// Reads `<model_dir>/config.json`.
ModelConfig load_model_config(const std::string& model_dir);
/// Serialises to Hugging Face config.json (round-trips through parse_model_config).
std::string model_config_to_json(const ModelConfig& config);

}  // namespace spindlekv
