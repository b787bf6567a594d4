#include "runtime/detail/cache_access.h"

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/rope.h"
#include "runtime/detail/coded_reads.h"
#include "runtime/detail/compressed_cache_impl.h"

namespace spindlekv {
namespace detail {

DenseLayer reconstruct_layer(const CompressedCache& cache, int64_t sequence, int64_t layer) {
  const auto& I = CacheAccess::impl(cache);
  SKV_CHECK(sequence >= 0 && sequence < I.batch, "sequence ", sequence, " outside [0, ", I.batch,
            ")");
  SKV_CHECK(layer >= 0 && layer < I.geometry.num_layers, "layer ", layer, " outside [0, ",
            I.geometry.num_layers, ")");
  const SequenceLayer& S = I.sequences[sequence][layer];
  SKV_CHECK(S.filled, "sequence ", sequence, " layer ", layer, " holds nothing");
  DenseLayer out;
  out.positions = S.positions.to(at::kLong);
  // RoPE tables for these positions alone: the cache's own tables stay as they are.
  const int64_t kv = I.geometry.num_kv_heads, n = out.positions.size(1), d = I.geometry.head_dim;
  const RopeTables t = rope_tables(I.inv_freq, out.positions.clamp_min(0).reshape({-1}));
  out.keys = apply_rope(reconstruct(S.keys, I.key_tables[layer]),
                        RopeTables{t.cos.view({kv, n, d}), t.sin.view({kv, n, d})});
  out.values = reconstruct(S.values, I.value_tables[layer]);
  const int64_t group = I.geometry.num_heads / kv;
  out.visible = S.member.defined()
                    ? S.member.clone()
                    : (out.positions >= 0).unsqueeze(1).expand({kv, group, n}).reshape({-1, n});
  return out;
}

}  // namespace detail
}  // namespace spindlekv
