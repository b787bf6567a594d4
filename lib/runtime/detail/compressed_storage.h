// Internal: how a compressed cache stores one layer of one sequence. Not
// installed; include only from lib/runtime/*.cpp.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "runtime/codebook_builder.h"
#include "runtime/detail/quantized_rows.h"
#include "runtime/storage_cost.h"

namespace spindlekv {
namespace detail {

/// Code of a slot whose vector is zero (padding, or a zero vector): it
/// matches no table and reconstructs to zero. Codes held as int16 use
/// kZeroCode16 instead; codes_long() maps it back.
constexpr int32_t kZeroCode = std::numeric_limits<int32_t>::max();
constexpr int16_t kZeroCode16 = std::numeric_limits<int16_t>::max();

/// Per-KV-head codebook tables used to code one of keys or values.
struct CodebookTables {
  at::Tensor calibrated;  ///< [groups, Kc, d] (groups 1 or kv_heads); undefined if none
  std::vector<int64_t> calibrated_sizes;  ///< entries in use per group
  double threshold = 1.0;
  bool shared() const { return calibrated.defined() && calibrated.size(0) == 1; }
  int64_t calibrated_capacity() const { return calibrated.defined() ? calibrated.size(1) : 0; }
};

/// Keys or values of one (sequence, layer).
/// code >= 0 and < Kc: calibrated entry; Kc <= code < Kc + jit capacity:
/// just-in-time entry code - Kc of the slot's KV head; code < 0: exact row
/// -code - 1 of the slot's KV head; kZeroCode: zero. Both per-head tables are
/// padded to a common capacity (grown by doubling) with counts in use.
struct CodedVectors {
  at::Tensor code;       ///< [kv_heads, slots] int16 or int32 (storage_cost.h)
  at::Tensor magnitude;  ///< [kv_heads, slots] (1 for exact rows, 0 for zero)
  /// Capacity behind code and magnitude while they are views of their
  /// leading columns (append_columns); undefined or stale otherwise.
  at::Tensor code_buffer, magnitude_buffer;
  at::Tensor exact;                  ///< [kv_heads, capacity, d] exact rows (unquantised)
  std::vector<int64_t> exact_count;  ///< rows in use per KV head, as last read on the host
  /// Rows in use per KV head on the device, [kv_heads] int64, counting those
  /// appended by decode steps that read nothing back (append_coded with
  /// defer_counts); undefined until the first such step. exact_unsettled:
  /// slots appended since exact_count was last brought up to date, so
  /// exact_count[g] + exact_unsettled bounds head g's rows in use.
  at::Tensor exact_used;
  int64_t exact_unsettled = 0;
  /// Exact rows held by a row codec (quant.coder set): then `exact` stays
  /// empty and row r of head g is quant's row r.
  QuantizedRows quant;
  bool quantized() const { return quant.coder != nullptr; }
  at::Tensor jit;                  ///< [kv_heads, capacity, d] just-in-time entries
  std::vector<int64_t> jit_count;  ///< entries in use per KV head, as last read on the host
  /// As exact_used and exact_unsettled, for just-in-time entries a fused
  /// decode append (decode_attention.h) built on the device: their count
  /// per head [kv_heads] int64 there, and the slots appended since
  /// jit_count was last brought up to date.
  at::Tensor jit_used;
  int64_t jit_unsettled = 0;
};

struct SequenceLayer {
  bool filled = false;
  at::Tensor positions;  ///< [kv_heads, slots] int32, -1 for padding
  at::Tensor member;     ///< [heads, slots] bool; undefined: every head sees every valid slot
  at::Tensor positions_buffer, member_buffer;  ///< capacity behind them (append_columns)
  CodedVectors keys, values;
  int64_t tokens_seen = 0;
};

/// float32 scratch reused from one decode step to the next, so that a step
/// over a long cache does not allocate (and page-fault in) fresh tables:
/// working memory, not cache storage (memory() does not count it). A tensor
/// taken from it is valid until the next take of the same buffer.
struct Workspace {
  at::Tensor keys, key_rows, value_rows;
  /// A contiguous [a, b, c] float32 view of `buffer` on `options`' device,
  /// which grows (doubling) when too small. Contents are undefined.
  static at::Tensor take(at::Tensor& buffer, int64_t a, int64_t b, int64_t c,
                         const at::TensorOptions& options);
};

/// Every exact row, [kv_heads, rows, d]: `exact` as stored, or the
/// quantised rows dequantised (float32, into `scratch` when given).
at::Tensor exact_table(const CodedVectors& coded, at::Tensor* scratch = nullptr);

/// `t` [kv_heads, capacity, ...] with at least `needed` rows along dim 1
/// (capacity doubled, new rows zero).
at::Tensor grow_rows(const at::Tensor& t, int64_t needed);

/// For each row of `mask` [rows, t] bool, the columns it sets in order, then
/// t + each column it does not set: the first `count`, [rows, count] int64
/// on the mask's device. A sort, so nothing is read back to the host.
at::Tensor set_columns_first(const at::Tensor& mask, int64_t count);

/// `current` [rows, n] with `extra` [rows, t] appended along dim 1, as a
/// view of the leading n + t columns of `buffer` [rows, capacity]. While
/// `current` is such a view of `buffer` with room for `extra`, only `extra`
/// is copied; otherwise (a tensor assigned elsewhere, another dtype, or
/// full) `buffer` is replaced by one of doubled capacity. So a cache that
/// grows by one column per decode step copies amortised O(rows) elements per
/// step, not everything it holds. Columns past n of an older view are
/// overwritten: views of other lengths must not be kept.
at::Tensor append_columns(at::Tensor& buffer, const at::Tensor& current, const at::Tensor& extra);

/// As append_columns with `t` columns left for the caller to write (their
/// contents are undefined): the view of n + t leading columns of `buffer`.
at::Tensor extend_columns(at::Tensor& buffer, const at::Tensor& current, int64_t t);

/// Bytes allocated for `view`: its buffer's when it is a view of `buffer`.
int64_t allocated_bytes(const at::Tensor& view, const at::Tensor& buffer);

/// The codes of `coded` as int64 (kZeroCode for zero slots), whatever their
/// stored width.
at::Tensor codes_long(const CodedVectors& coded);

/// Widens the codes `out` holds to int32 unless they are int16 and every
/// code to come, in [lowest, highest] (kZeroCode aside), fits int16 below
/// kZeroCode16. The bounds come from the caller's host-side counts.
void fit_codes(CodedVectors& out, int64_t lowest, int64_t highest);

/// Appends codes [kv_heads, t] int64 (kZeroCode for zero slots) to `out`:
/// as int16 while `out` holds int16 codes (empty_coded starts so where
/// storage_cost.h says) and every code lies in [lowest, highest] within
/// int16 (below kZeroCode16), else as int32, widening the codes already
/// held. The bounds (of every code but kZeroCode) come from the caller's
/// host-side counts, so nothing is read back from the device.
void append_codes(CodedVectors& out, const at::Tensor& codes, int64_t lowest, int64_t highest);

/// Appends magnitudes [kv_heads, t] (any floating dtype) to `out`.
void append_magnitudes(CodedVectors& out, const at::Tensor& magnitudes);

/// The best entry of `table` [groups, K, d] (groups 1 or kv_heads) for each
/// direction of `dirs` [kv_heads, n, d], entries past counts[g] (one count,
/// or one per head) excluded: (cosine [kv_heads, n], index [kv_heads, n]
/// int64). The similarities are made `block_rows` directions at a time (0:
/// blocks of about 2^22 floats on the host, 2^26 on a device), so a long
/// prefill's [kv_heads, n, K] product is never one allocation of gigabytes.
std::pair<at::Tensor, at::Tensor> nearest(const at::Tensor& dirs, const at::Tensor& table,
                                          const std::vector<int64_t>& counts,
                                          int64_t block_rows = 0);

/// Decode steps a cache may append with its exact-row counts left on the
/// device before append_coded reads them back once.
constexpr int64_t kExactSettleSlots = 64;

/// The part of coding vectors [kv_heads, N, d] that depends only on what a
/// batch of sequences shares (the calibrated tables): magnitudes, directions
/// and calibrated hits. A decode step matches every sequence's new vectors
/// in one pass (match_shared) and then appends each sequence's columns
/// (append_matched), so the batch costs one table product, not one per
/// sequence. Columns [b * t, (b + 1) * t) are sequence b's when sequences
/// of t vectors each are matched together.
struct SharedMatch {
  at::Tensor vectors;    ///< [kv_heads, N, d] float32
  at::Tensor dirs;       ///< [kv_heads, N, d] unit directions (zero for zero vectors)
  at::Tensor magnitude;  ///< [kv_heads, N] float32, 0 where not valid
  at::Tensor code;       ///< [kv_heads, N] int64: a calibrated entry, or kZeroCode
  at::Tensor open;       ///< [kv_heads, N] bool: valid, nonzero and no calibrated entry
  /// Sequence `s`'s columns (of `count` each), as views.
  SharedMatch columns(int64_t s, int64_t count) const;
  /// Computes the members below for `sequences` sequences of equal length,
  /// rows in `entry` (the exact table's dtype), so that a decode step's
  /// appends read them instead of computing them once per sequence. Valid
  /// while no just-in-time stage changes `open`.
  void prepare_exact_rows(int64_t sequences, at::ScalarType entry);
  /// Within each sequence's columns, the open vectors up to and including
  /// this one, minus 1 ([kv_heads, N] int64): the r-th miss of a head
  /// (from 0) goes r rows past the rows that head uses.
  at::Tensor open_rank;
  /// The open vectors as exact rows hold them, zero elsewhere:
  /// [sequences, kv_heads, N / sequences, d] in the entry dtype (columns()
  /// gives one sequence's [kv_heads, N / sequences, d]).
  at::Tensor exact_rows;
  /// Open vectors per head and sequence, [kv_heads, sequences] int64
  /// (columns() gives [kv_heads, 1]).
  at::Tensor open_count;
  /// 0 .. kv_heads - 1 as [kv_heads, 1] int64.
  at::Tensor head_index;
  /// magnitude with 1 where open (an exact row's magnitude), [kv_heads, N].
  at::Tensor exact_magnitude;
};

/// Stage one of append_coded, for vectors [kv_heads, N, d] of one or more
/// sequences (rows with valid[g, i] false are padding; an undefined `valid`
/// makes every row valid).
SharedMatch match_shared(const at::Tensor& vectors, const at::Tensor& valid,
                         const CodebookTables& tables, CodebookMode mode);

/// Stage two of append_coded: matches `m`'s open vectors against `out`'s
/// just-in-time entries (building new ones from the misses with
/// `build_jit_from_misses`), keeps the rest exact and appends them all as
/// new slots of `out`. With `defer_counts` (decode), nothing is read back
/// from the device where nothing needs deciding on the host: misses become
/// exact rows at device-computed places, and their count is read back once
/// per kExactSettleSlots appended slots (settle_exact_rows). Building
/// just-in-time entries and a quantised table's rows read it always.
void append_matched(CodedVectors& out, const SharedMatch& m, const CodebookTables& tables,
                    CodebookMode mode, bool build_jit_from_misses, bool defer_counts = false);

/// Codes vectors [kv_heads, t, d] and appends them as new slots of `out`:
/// match_shared, then append_matched.
void append_coded(CodedVectors& out, const at::Tensor& vectors, const at::Tensor& valid,
                  const CodebookTables& tables, CodebookMode mode, bool build_jit_from_misses,
                  bool defer_counts = false);

/// A host-side bound on every head's exact rows in use: the most any head
/// had when last read, plus the slots appended since.
int64_t exact_rows_bound(const CodedVectors& coded);

/// Exact rows in use per KV head (read back from the device when some were
/// appended with deferred counts).
std::vector<int64_t> exact_rows_in_use(const CodedVectors& coded);

/// Brings exact_count up to date (one read from the device if any count is
/// deferred).
void settle_exact_rows(CodedVectors& coded);

/// The same for just-in-time entries: a host-side bound on every head's
/// entries in use, the entries in use per head (read back when deferred),
/// and bringing jit_count up to date (dropping jit_used, so that the host
/// may change jit_count after it).
int64_t jit_entries_bound(const CodedVectors& coded);
std::vector<int64_t> jit_entries_in_use(const CodedVectors& coded);
void settle_jit_entries(CodedVectors& coded);

/// An empty CodedVectors for `kv_heads` heads of size `head_dim` on the
/// device of `options`, holding exact rows and entries in `dtype` and
/// magnitudes as storage_cost.h says.
CodedVectors empty_coded(int64_t kv_heads, int64_t head_dim, const at::TensorOptions& options,
                         StorageDtype dtype);

/// The ATen dtypes of entries and exact rows, and of magnitudes.
at::ScalarType entry_scalar_type(StorageDtype dtype);
at::ScalarType magnitude_scalar_type(StorageDtype dtype);

}  // namespace detail
}  // namespace spindlekv
