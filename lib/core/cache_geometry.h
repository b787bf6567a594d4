// What a KV cache needs to know of the model it serves, and nothing more:
// layers, heads, head size, rotary embeddings and the attention window. An
// inference engine fills it from its own model; ModelConfig::geometry()
// gives it for a Hugging Face config.json.
#pragma once

#include <cstdint>

namespace spindlekv {

/// How rotary position frequencies are rescaled for longer contexts.
enum class RopeScaling {
  kNone,    ///< plain RoPE: inv_freq = theta^(-2i/d)
  kLinear,  ///< position interpolation: inv_freq / factor
  kLlama3,  ///< Llama 3.1's frequency-dependent scaling
};

struct RopeParameters {
  double theta = 10000.0;
  RopeScaling scaling = RopeScaling::kNone;
  double factor = 1.0;  ///< linear and llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;  ///< llama3 only
};

struct CacheGeometry {
  int64_t num_layers = 0;      ///< decoder layers
  int64_t num_heads = 0;       ///< query heads (h)
  int64_t num_kv_heads = 0;    ///< key/value heads (h_g); GQA when < num_heads
  int64_t head_dim = 0;        ///< d_h, even (rotary halves)
  RopeParameters rope;         ///< how keys are rotated by position
  int64_t sliding_window = 0;  ///< keys older than this many positions are not attended; 0: none

  /// Query heads per KV head (h_n).
  int64_t group_size() const { return num_heads / num_kv_heads; }
  /// Throws kInvalidInput naming the field (by its config.json name) if the
  /// numbers are inconsistent.
  void validate() const;
};

}  // namespace spindlekv
