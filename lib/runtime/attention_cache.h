// The interface a decoder uses to attend through a KV cache it does not own
// the layout of (LlamaModel::forward_with_cache). The compressed cache
// implements it; so can an inference engine's own cache.
//
// Shapes, float32: queries [batch, heads, new, head_dim] (post-RoPE);
// keys [batch, kv_heads, new, head_dim] (pre-RoPE); values the same;
// positions [batch, new] int64 (LlamaModel passes them on the host, so a
// cache can read them without waiting for the device); output [batch,
// heads, new, head_dim].
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>

namespace spindlekv {

class AttentionCache {
 public:
  virtual ~AttentionCache() = default;
  virtual int64_t batch_size() const = 0;
  /// Position the next token of `sequence` takes.
  virtual int64_t next_position(int64_t sequence) const = 0;
  /// Adds the new tokens' keys and values to `layer` and returns the
  /// attention of `queries` over everything the layer holds, new tokens
  /// included (causal by position).
  virtual at::Tensor append_and_attend(int64_t layer, const at::Tensor& queries,
                                       const at::Tensor& keys_pre_rope, const at::Tensor& values,
                                       const at::Tensor& positions) = 0;
  /// The new tokens' ids [batch, new] int64, given before the first layer
  /// appends them; a cache that holds layers as token ids needs them.
  virtual void observe_tokens(const at::Tensor& tokens) {}
  /// Called once every layer has appended `tokens` new tokens per sequence.
  virtual void advance(int64_t tokens) = 0;
};

}  // namespace spindlekv
