// A compressed KV cache (SpindleKV stages 1 and 2) for a batch of sequences:
// prefill compresses each layer of each sequence, decoding appends new tokens
// (joining a codebook entry when one is close enough) and attends over what
// is held, re-applying RoPE to the reconstructed pre-RoPE keys.
//
// Shapes, float32 on the cache's device:
//   keys, values      [kv_heads, tokens, head_dim] per sequence (pre-RoPE keys)
//   window_attention  [heads, window_rows, tokens]
//   queries           [batch, heads, new, head_dim] post-RoPE
//   positions         [batch, new] int64
//
// Layout (per sequence and layer): every KV head holds the union of the
// tokens its h_n query heads kept, once (so the paper's "repeat KV heads"
// costs no duplicate vectors), plus a [heads, slots] membership mask when the
// query heads of a group kept different tokens. Each K and V vector is an
// code and a magnitude: a code names a calibrated entry (shared by all
// requests), a just-in-time entry (this request's), or an exact row. Exact
// rows may be held by a row codec (CompressionParameters::key_codec).
// A layer whose K/V depend on the token id alone (layer 0 of a Llama-family
// model) can instead be held as token ids into a per-model table
// (hold_as_token_ids): every token is kept, its id stored as a code and a
// magnitude per KV head for K and for V (LayerMemory::token_id_bytes).
//
// Threads: an Artifact, with its codebooks, budgets and plans, is read-only
// once loaded and may be shared by any number of caches on any threads, as
// may the codec and policy registries and an EvictionPolicy. A cache is not:
// one thread at a time may call it (an engine runs a request's steps in
// order anyway), while distinct caches run on distinct threads at once
// (tests/cache_threads_test.cpp, under ThreadSanitizer in scripts/sanitize.sh).
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/cache_geometry.h"
#include "runtime/attention_cache.h"
#include "runtime/codebook_builder.h"
#include "runtime/eviction_policy.h"
#include "runtime/paper_defaults.h"
#include "runtime/storage_cost.h"

namespace spindlekv {

struct Artifact;
namespace detail {
struct CacheAccess;  // runtime/detail/cache_access.h: tests and tools look inside
}  // namespace detail

/// How per-layer budgets are set from the reserve ratio.
enum class BudgetKind {
  kUniform,     ///< every layer keeps r_c of its context
  kPyramid,     ///< the paper's linear pyramid (beta = pyramid_beta)
  kCalibrated,  ///< the artifact's calibrated table
};

const char* to_string(BudgetKind kind);
/// Parses "uniform|pyramid|calibrated"; throws naming the allowed values.
BudgetKind parse_budget_kind(const std::string& name);

struct CompressionParameters {
  /// r: fraction of each sequence's prefill tokens kept, window included. 1 keeps all.
  double reserve_ratio = 0.2;
  BudgetKind budget = BudgetKind::kPyramid;
  double pyramid_beta = paper::kPyramidBeta;  ///< the paper's smallest per-layer ratio
  /// l_w: the last tokens of the prefill that are always kept and whose
  /// queries score importance.
  int64_t window = paper::kWindow;
  GqaMode gqa = GqaMode::kRepeat;
  CodebookMode codebook = CodebookMode::kCalibrated;
  /// theta_K and theta_V (cosine); NaN takes the artifact's (0.98 / 0.95 without one).
  double key_threshold = std::nan("");
  double value_threshold = std::nan("");
  /// Just-in-time and hybrid modes: a decoded vector with no entry above
  /// theta becomes a new entry (the paper); otherwise it stays exact.
  bool extend_codebook_when_decoding = true;
  /// On a CUDA device of a CUDA build, a decode step of one new token per
  /// sequence codes the batch's new K/V in one fused kernel and attends in
  /// another (runtime/detail/decode_kernels.cuh); false takes the ATen
  /// reference path (always taken on the CPU). An execution choice: not
  /// saved with a cache.
  bool fused_decode = true;
  /// What exact rows and codebook entries are held in, and the dense cache
  /// the memory ratio divides by (runtime/storage_cost.h). Attention is
  /// computed in float32 whatever it is.
  StorageDtype storage_dtype = StorageDtype::kFloat16;
  /// How exact rows are held, keys and values apart (llama.cpp's type_k /
  /// type_v): "none" keeps them in storage_dtype; otherwise a row codec's
  /// name (runtime/row_codec.h: "fp8", "fp8-calibrated", "kivi4", "kivi2",
  /// "tq2", "tq2.5", "tq3", "tq4", "q8_0", "q4_0", ...), its knobs in the
  /// name ("kivi4-g32-r64"). With every token kept and no codebook this is a
  /// plain quantised cache; under eviction and codebooks it codes what they
  /// keep exact. Codebook entries stay in storage_dtype. Keys are coded
  /// before RoPE.
  std::string key_codec = "none";
  std::string value_codec = "none";
  /// Sets both codecs to `name`.
  void set_codec(const std::string& name) { key_codec = value_codec = name; }
};

/// Bytes held by one layer, summed over the batch. "Held" counts what the
/// representation needs: valid slots, entries and rows in use (tensors'
/// padding is in allocated_bytes); no codes or magnitudes without a codebook
/// (each slot is its own exact row, magnitude 1); no positions in a layer
/// that evicted nothing (they are 0, 1, ...).
struct LayerMemory {
  int64_t tokens_seen = 0;       ///< tokens of all sequences (prefill + decoded)
  int64_t slots = 0;             ///< (KV head, token) pairs held
  int64_t kept_head_tokens = 0;  ///< (query head, token) pairs visible: the paper's kept vectors
  int64_t calibrated_vectors = 0, jit_vectors = 0, exact_vectors = 0;  ///< K and V together
  int64_t code_bytes = 0, magnitude_bytes = 0, exact_bytes = 0, jit_entry_bytes = 0;
  int64_t position_bytes = 0, membership_bytes = 0;
  /// A token-id layer: the ids as stored, a code per KV head for K and for V
  /// with a magnitude each (not the 2 B an engine holding ids alone would).
  int64_t token_id_bytes = 0;
  int64_t distinct_entries = 0;    ///< codebook entries referenced + exact rows (K and V)
  int64_t shared_entry_bytes = 0;  ///< calibrated entries referenced (K and V), not in held_bytes
  int64_t full_bytes = 0;          ///< a dense K/V cache of tokens_seen tokens, storage dtype
  int64_t allocated_bytes = 0;     ///< every tensor's storage, padding included
  double paper_ratio = 0;          ///< the paper's per-layer formula (README, "Memory")
  int64_t held_bytes() const {
    return code_bytes + magnitude_bytes + exact_bytes + jit_entry_bytes + position_bytes +
           membership_bytes + token_id_bytes;
  }
};

/// What one request's cache costs. Shared tables (the calibrated codebook,
/// the token tables, a codec's rotations and codebooks) serve every request
/// and a request cannot run without them resident, so each of `requests`
/// concurrent requests is charged the whole tables' bytes divided by
/// `requests` (../shared/EVALUATION.md); without that a table would look free.
double shared_bytes_per_request(double total, double requests);

struct MemoryReport {
  std::vector<LayerMemory> layers;
  int64_t held_bytes = 0;                       ///< per-request bytes, all layers
  int64_t full_bytes = 0;                       ///< the dense cache's bytes, in the storage dtype
  StorageDtype dtype = StorageDtype::kFloat32;  ///< the storage dtype
  /// Every shared table the cache needs, whole: calibrated entries in use,
  /// token tables, the row codecs' tables; once for all requests.
  int64_t shared_bytes_total = 0;
  /// The shared entries and rows this cache references (informative: not
  /// what is charged).
  int64_t shared_bytes_referenced = 0;
  double ratio = 0;  ///< (held + shared total) / full: one request charged the whole tables
  double ratio_excluding_shared = 0;  ///< held / full: the shared tables taken as free
  double paper_ratio = 0;             ///< mean over layers of LayerMemory::paper_ratio
  /// The ratio when `requests` concurrent requests share the tables (each
  /// charged shared_bytes_per_request).
  double ratio_shared_by(int64_t requests) const;
};

class CompressedCache : public AttentionCache {
 public:
  /// A cache for `batch` sequences of a model of `geometry`. `artifact` is
  /// required for the calibrated and hybrid modes and calibrated budgets; it
  /// must match the geometry. Throws kInvalidInput naming the problem.
  CompressedCache(const CacheGeometry& geometry, int64_t batch, CompressionParameters params,
                  std::shared_ptr<const Artifact> artifact = nullptr,
                  c10::Device device = c10::kCPU);
  ~CompressedCache() override;
  CompressedCache(CompressedCache&&) noexcept;
  CompressedCache& operator=(CompressedCache&&) noexcept;

  /// Replaces stage 1 (default: WindowAttentionPolicy with params.gqa).
  void set_policy(std::shared_ptr<const EvictionPolicy> policy);
  const CompressionParameters& parameters() const;
  const EvictionPolicy& policy() const;

  /// Holds `layer` as token ids: keys_by_token and values_by_token [vocab,
  /// kv_heads, head_dim] (pre-RoPE keys) are what the layer computes for each
  /// token id. Every token of the layer is kept (no eviction, no codebook)
  /// and costs one id; the table is shared by all requests and charged as a
  /// whole table, like the calibrated codebook (shared_bytes_per_request). Prefill
  /// and decoding then need the token ids (prefill's token_ids,
  /// observe_tokens) and refuse K/V that differ from the table's rows: a
  /// layer whose K/V depend on more than the token id cannot be held so.
  /// Call before the layer is prefilled.
  void hold_as_token_ids(int64_t layer, const at::Tensor& keys_by_token,
                         const at::Tensor& values_by_token);

  /// Compresses one layer of a freshly prefilled sequence (positions
  /// 0..tokens-1). Every layer of a sequence must be prefilled with the same
  /// token count before it decodes. `window_attention` holds the attention of
  /// the prefill's last queries, at least policy().attention_rows() of them
  /// (the window for SpindleKV); unneeded when nothing is evicted.
  /// `token_ids` [tokens] int64 is needed by a layer held as token ids.
  void prefill(int64_t sequence, int64_t layer, const at::Tensor& keys_pre_rope,
               const at::Tensor& values, const at::Tensor& window_attention,
               const at::Tensor& token_ids = at::Tensor());
  /// Context tokens each query head of `layer` keeps for a prefill of `tokens`.
  int64_t layer_budget(int64_t layer, int64_t tokens) const;

  // AttentionCache
  int64_t batch_size() const override;
  int64_t next_position(int64_t sequence) const override;
  /// Decoding reads nothing back from the device (so the host can queue the
  /// next step while this one runs) when `positions` is on the host, as an
  /// engine keeps them, and nothing is decided on the host: no layer held as
  /// token ids (its K/V are checked against the table), no quantised exact
  /// rows, no just-in-time entries built while decoding
  /// (extend_codebook_when_decoding) unless the fused CUDA append builds
  /// them (one token per sequence, CompressionParameters::fused_decode).
  /// The counts of exact rows (and entries built) are then read back once
  /// per 64 decoded tokens.
  at::Tensor append_and_attend(int64_t layer, const at::Tensor& queries,
                               const at::Tensor& keys_pre_rope, const at::Tensor& values,
                               const at::Tensor& positions) override;
  void advance(int64_t tokens) override;
  void observe_tokens(const at::Tensor& tokens) override;

  MemoryReport memory() const;

  /// Saves every sequence's compressed layers (atomically, safetensors). The
  /// calibrated codebook is not copied: the file records the artifact's
  /// checksum, and load() needs the same artifact.
  void save(const std::string& path) const;
  static CompressedCache load(const std::string& path, const CacheGeometry& geometry,
                              std::shared_ptr<const Artifact> artifact = nullptr,
                              c10::Device device = c10::kCPU);

 private:
  struct Impl;  // runtime/detail/compressed_cache_impl.h
  friend struct detail::CacheAccess;
  std::unique_ptr<Impl> impl_;
};

}  // namespace spindlekv
