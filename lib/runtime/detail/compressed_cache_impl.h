// Internal: the state behind CompressedCache, shared by its .cpp files.
#pragma once

#include <ATen/Tensor.h>

#include <memory>
#include <vector>

#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/compressed_storage.h"
#include "runtime/row_codec.h"

namespace spindlekv {

struct CompressedCache::Impl {
  CacheGeometry geometry;
  int64_t batch = 0;
  CompressionParameters params;
  std::shared_ptr<const Artifact> artifact;
  c10::Device device = c10::kCPU;
  std::shared_ptr<const EvictionPolicy> policy;
  std::vector<detail::CodebookTables> key_tables, value_tables;  ///< per layer
  /// Per layer: the row codecs of exact keys and values (null: storage dtype).
  std::vector<std::shared_ptr<const RowCoder>> key_coders, value_coders;
  at::Tensor inv_freq;            ///< [head_dim / 2] float64
  at::Tensor rope_cos, rope_sin;  ///< [P, head_dim] for positions 0..P-1, grown on demand
  std::vector<std::vector<detail::SequenceLayer>> sequences;  ///< [batch][layer]
  std::vector<int64_t> next_positions;                        ///< per sequence
  std::vector<bool> token_id_layer;  ///< per layer: held as token ids (hold_as_token_ids)
  int64_t token_vocab = 0;           ///< rows of the token tables
  at::Tensor pending_tokens;         ///< [batch, new] int64 from observe_tokens
  detail::Workspace workspace;       ///< decode scratch, reused from step to step

  /// Appends token ids [t] as codes (magnitude 1) of a token-id layer after
  /// checking that keys/values [kv_heads, t, d] are the table's rows.
  void append_token_ids(int64_t layer, detail::SequenceLayer& S, const at::Tensor& ids,
                        const at::Tensor& keys, const at::Tensor& values);

  Impl(const CacheGeometry& geometry, int64_t batch, CompressionParameters params,
       std::shared_ptr<const Artifact> artifact, c10::Device device);
  at::TensorOptions float_options() const;
  /// An empty CodedVectors of this cache's heads, head size and storage
  /// dtype for the keys or values of `layer`, quantised as params say.
  detail::CodedVectors empty_coded(bool keys, int64_t layer) const;
  /// Grows the RoPE tables to cover positions [0, needed).
  void ensure_rope(int64_t needed);
  detail::SequenceLayer& slot(int64_t sequence, int64_t layer);
};

}  // namespace spindlekv
