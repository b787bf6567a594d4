// CompressedCache::memory(): exact byte accounting of what the cache holds.
#include <ATen/ATen.h>

#include <algorithm>

#include "runtime/compressed_cache.h"
#include "runtime/detail/compressed_cache_impl.h"
#include "runtime/storage_cost.h"

namespace spindlekv {
namespace {

int64_t nbytes(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

struct CodeCounts {
  int64_t calibrated = 0, jit = 0, exact = 0, distinct = 0;
  int64_t calibrated_distinct = 0;  ///< calibrated entries referenced
};

CodeCounts count_codes(const detail::CodedVectors& c, const detail::CodebookTables& tables) {
  CodeCounts out;
  const int64_t Kc = tables.calibrated_capacity();
  at::Tensor code = detail::codes_long(c);
  at::Tensor cal = (code >= 0) & (code < Kc);
  out.calibrated = cal.sum().item<int64_t>();
  out.exact = (code < 0).sum().item<int64_t>();
  out.jit = ((code >= Kc) & (code != detail::kZeroCode)).sum().item<int64_t>();
  if (out.calibrated > 0) {
    // Distinct calibrated entries referenced: per KV head, or across heads when shared.
    at::Tensor head = at::arange(code.size(0), code.options()).unsqueeze(1).expand_as(code);
    at::Tensor key = tables.shared() ? code : head * Kc + code;
    out.calibrated_distinct = std::get<0>(at::_unique(key.masked_select(cal))).numel();
    out.distinct += out.calibrated_distinct;
  }
  for (int64_t j : detail::jit_entries_in_use(c)) out.distinct += j;
  for (int64_t e : detail::exact_rows_in_use(c)) out.distinct += e;
  return out;
}

}  // namespace

MemoryReport CompressedCache::memory() const {
  const Impl& I = *impl_;
  const int64_t L = I.geometry.num_layers, kv = I.geometry.num_kv_heads,
                heads = I.geometry.num_heads;
  const int64_t d = I.geometry.head_dim, group = heads / kv;
  const StorageDtype dtype = I.params.storage_dtype;
  const int64_t vec = storage::vector_bytes(d, dtype);
  MemoryReport report;
  report.dtype = dtype;
  report.layers.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    LayerMemory& m = report.layers[l];
    double paper_sum = 0;
    int64_t paper_terms = 0;
    for (int64_t b = 0; b < I.batch; ++b) {
      const detail::SequenceLayer& S = I.sequences[b][l];
      if (!S.filled) continue;
      at::Tensor valid = S.positions >= 0;
      const int64_t slots = valid.sum().item<int64_t>();
      const int64_t kept = S.member.defined() ? S.member.sum().item<int64_t>() : slots * group;
      m.tokens_seen += S.tokens_seen;
      m.slots += slots;
      m.kept_head_tokens += kept;
      // Every valid slot carries a code and a magnitude for K and for V,
      // except without codebooks, where the code is the slot's own exact row
      // and the magnitude 1: an eviction-only cache would not store them.
      const int64_t codes = slots * (storage::code_bytes(dtype, S.keys.code.element_size() == 2) +
                                     storage::code_bytes(dtype, S.values.code.element_size() == 2));
      const int64_t magnitudes = 2 * slots * storage::magnitude_bytes(dtype);
      if (I.token_id_layer[l]) {
        // Each token's id is stored as the code of every KV head, for K and
        // for V, with a magnitude of 1: charged at the widths stored, not at
        // the 2-byte id an engine could hold instead.
        m.token_id_bytes += codes + magnitudes;
      } else if (I.params.codebook != CodebookMode::kNone) {
        m.code_bytes += codes;
        m.magnitude_bytes += magnitudes;
      }
      // Positions are implicit (0, 1, ...) while a layer has evicted nothing.
      if (slots < kv * S.tokens_seen || S.member.defined()) {
        m.position_bytes += slots * storage::kPositionBytes;
      }
      m.membership_bytes += nbytes(S.member);
      for (const detail::CodedVectors* c : {&S.keys, &S.values}) {
        if (c->quantized()) {  // the codec's fields in use, the recent window
          m.exact_bytes += c->quant.held_bytes();
          m.allocated_bytes += c->quant.allocated_bytes();
        } else {
          for (int64_t e : detail::exact_rows_in_use(*c)) m.exact_bytes += e * vec;
        }
      }
      int64_t jit_entries = 0;
      for (int64_t j : detail::jit_entries_in_use(S.keys)) jit_entries += j;
      for (int64_t j : detail::jit_entries_in_use(S.values)) jit_entries += j;
      m.jit_entry_bytes += jit_entries * vec;
      const CodeCounts kc = count_codes(S.keys, I.key_tables[l]);
      const CodeCounts vc = count_codes(S.values, I.value_tables[l]);
      m.calibrated_vectors += kc.calibrated + vc.calibrated;
      m.jit_vectors += kc.jit + vc.jit;
      m.exact_vectors += kc.exact + vc.exact;
      m.distinct_entries += kc.distinct + vc.distinct;
      m.shared_entry_bytes += (kc.calibrated_distinct + vc.calibrated_distinct) * vec;
      m.full_bytes += 2 * S.tokens_seen * kv * vec;
      // Growing tensors count their capacity (append_columns).
      m.allocated_bytes += detail::allocated_bytes(S.positions, S.positions_buffer) +
                           detail::allocated_bytes(S.member, S.member_buffer);
      for (const detail::CodedVectors* c : {&S.keys, &S.values}) {
        m.allocated_bytes += detail::allocated_bytes(c->code, c->code_buffer) +
                             detail::allocated_bytes(c->magnitude, c->magnitude_buffer) +
                             nbytes(c->exact) + nbytes(c->jit);
      }
      // The paper's formula, per K and V: kept fraction x (codebook size /
      // kept vectors) x (1 + index and magnitude overhead / d_h), where kept
      // vectors count KV-head vectors (repeats collapse) and the codebook
      // size counts distinct entries and exact rows.
      const double kept_fraction =
          static_cast<double>(kept) / static_cast<double>(heads * S.tokens_seen);
      const double kept_vectors = static_cast<double>(kept) / static_cast<double>(group);
      const double overhead = I.params.codebook == CodebookMode::kNone ? 0.0 : 2.0 / d;
      for (int64_t distinct : {kc.distinct, vc.distinct}) {
        const double share = kept_vectors > 0 ? std::min(1.0, distinct / kept_vectors) : 0.0;
        paper_sum += kept_fraction * share * (1 + overhead);
        ++paper_terms;
      }
    }
    m.paper_ratio = paper_terms > 0 ? paper_sum / paper_terms : 0.0;
    report.held_bytes += m.held_bytes();
    report.shared_bytes_referenced += m.shared_entry_bytes;
    report.full_bytes += m.full_bytes;
    report.paper_ratio += m.paper_ratio / static_cast<double>(L);
  }
  for (int64_t l = 0; l < L; ++l) {
    for (const detail::CodebookTables* t : {&I.key_tables[l], &I.value_tables[l]}) {
      for (int64_t s : t->calibrated_sizes) report.shared_bytes_total += s * vec;
    }
    // A row codec's own tables (rotations, scalar codebooks), whole.
    if (!I.token_id_layer[l]) {
      for (const auto* c : {&I.key_coders[l], &I.value_coders[l]}) {
        if (*c) report.shared_bytes_total += (*c)->shared_bytes();
      }
    }
  }
  report.ratio = report.ratio_shared_by(1);
  report.ratio_excluding_shared = report.full_bytes > 0 ? static_cast<double>(report.held_bytes) /
                                                              static_cast<double>(report.full_bytes)
                                                        : 0.0;
  return report;
}

double shared_bytes_per_request(double total, double requests) {
  return total / std::max(requests, 1.0);
}

double MemoryReport::ratio_shared_by(int64_t requests) const {
  if (full_bytes <= 0) return 0.0;
  const double per_request = shared_bytes_per_request(static_cast<double>(shared_bytes_total),
                                                      static_cast<double>(requests));
  return (static_cast<double>(held_bytes) + per_request) / static_cast<double>(full_bytes);
}

}  // namespace spindlekv
