#include "runtime/detail/compressed_storage.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <tuple>

#include "core/error.h"
#include "runtime/codebook_builder.h"
#include "runtime/detail/host_transfer.h"
#include "runtime/detail/jit_reference.h"

namespace spindlekv {
namespace detail {

std::pair<at::Tensor, at::Tensor> nearest(const at::Tensor& dirs, const at::Tensor& table,
                                          const std::vector<int64_t>& counts, int64_t block_rows) {
  const int64_t kv = dirs.size(0), n = dirs.size(1), K = table.size(1);
  at::Tensor t = table.to(dirs.scalar_type());  // entries may be stored narrower
  t = (t.size(0) == 1 ? t.expand({kv, K, t.size(2)}) : t).transpose(1, 2);  // [kv, d, K]
  bool all_in_use = true;
  std::vector<int64_t> per_head(kv);
  for (int64_t g = 0; g < kv; ++g) {
    per_head[g] = counts[counts.size() == 1 ? 0 : g];
    all_in_use = all_in_use && per_head[g] >= K;
  }
  at::Tensor unused;  // [kv, 1, K] bool: entries past a head's count
  if (!all_in_use) {
    const at::Tensor limit = to_device(per_head, at::kLong, dirs.device());
    unused =
        at::arange(K, dirs.options().dtype(at::kLong)).view({1, 1, K}) >= limit.view({kv, 1, 1});
  }
  auto block = [&](const at::Tensor& d) {
    at::Tensor sims = at::bmm(d, t);  // [kv, rows, K]
    if (unused.defined()) sims.masked_fill_(unused, -3.0);
    return sims.max(2);
  };
  // A block's similarities: about 2^22 floats on the host (below malloc's
  // mmap threshold, so reused), 2^26 on a device (fewer, larger launches).
  const int64_t budget = int64_t{1} << (dirs.is_cpu() ? 22 : 26);
  const int64_t rows =
      block_rows > 0 ? block_rows : std::max<int64_t>(1, budget / std::max<int64_t>(1, kv * K));
  if (n <= rows) {
    auto [best, arg] = block(dirs);
    return {best, arg};
  }
  at::Tensor best = at::empty({kv, n}, dirs.options());
  at::Tensor arg = at::empty({kv, n}, dirs.options().dtype(at::kLong));
  for (int64_t start = 0; start < n; start += rows) {
    const int64_t m = std::min(rows, n - start);
    auto [b, a] = block(dirs.narrow(1, start, m));
    best.narrow(1, start, m).copy_(b);
    arg.narrow(1, start, m).copy_(a);
  }
  return {best, arg};
}

at::Tensor grow_rows(const at::Tensor& t, int64_t needed) {
  const int64_t cap = t.size(1);
  if (needed <= cap) return t;
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape[1] = std::max(needed, 2 * cap) - cap;
  return at::cat({t, at::zeros(shape, t.options())}, 1);
}

at::Tensor set_columns_first(const at::Tensor& mask, int64_t count) {
  const int64_t t = mask.size(1);
  const at::Tensor column = at::arange(t, mask.options().dtype(at::kLong)).expand(mask.sizes());
  return std::get<0>(at::where(mask, column, column + t).sort(1)).narrow(1, 0, count);
}

namespace {

bool views_leading_columns(const at::Tensor& view, const at::Tensor& buffer) {
  return buffer.defined() && view.defined() && view.numel() > 0 &&
         view.data_ptr() == buffer.data_ptr() && view.scalar_type() == buffer.scalar_type() &&
         view.device() == buffer.device() && view.dim() == 2 && view.size(0) == buffer.size(0) &&
         view.stride(0) == buffer.stride(0) && view.stride(1) == 1;
}

}  // namespace

at::Tensor extend_columns(at::Tensor& buffer, const at::Tensor& current, int64_t t) {
  SKV_CHECK(current.dim() == 2 && t >= 0, "extend_columns: cannot add ", t, " columns to ",
            current.sizes());
  const int64_t rows = current.size(0), n = current.size(1);
  if (t == 0) return current;
  if (!(views_leading_columns(current, buffer) && n + t <= buffer.size(1))) {
    const int64_t capacity = std::max<int64_t>({n + t, 2 * n, 16});
    at::Tensor grown = at::empty({rows, capacity}, current.options());
    if (n > 0) grown.narrow(1, 0, n).copy_(current);
    buffer = grown;
  }
  return buffer.narrow(1, 0, n + t);
}

at::Tensor append_columns(at::Tensor& buffer, const at::Tensor& current, const at::Tensor& extra) {
  SKV_CHECK(current.dim() == 2 && extra.dim() == 2 && extra.size(0) == current.size(0),
            "append_columns: cannot append ", extra.sizes(), " to ", current.sizes());
  const int64_t n = current.size(1), t = extra.size(1);
  if (t == 0) return current;
  at::Tensor out = extend_columns(buffer, current, t);
  out.narrow(1, n, t).copy_(extra);
  return out;
}

int64_t allocated_bytes(const at::Tensor& view, const at::Tensor& buffer) {
  const at::Tensor& t = views_leading_columns(view, buffer) ? buffer : view;
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
}

at::Tensor Workspace::take(at::Tensor& buffer, int64_t a, int64_t b, int64_t c,
                           const at::TensorOptions& options) {
  const int64_t need = a * b * c;
  if (!buffer.defined() || buffer.numel() < need || buffer.device() != options.device()) {
    const int64_t grown = buffer.defined() ? 2 * buffer.numel() : 0;
    buffer = at::empty({std::max(need, grown)}, options.dtype(at::kFloat));
  }
  return buffer.narrow(0, 0, need).view({a, b, c});
}

namespace {

// Counts per KV head kept on the host (`host`, as last read) and on the
// device (`used`, ahead of `host` by at most `unsettled` per head).
int64_t counts_bound(const std::vector<int64_t>& host, int64_t unsettled) {
  return host.empty() ? 0 : *std::max_element(host.begin(), host.end()) + unsettled;
}

std::vector<int64_t> counts_in_use(const std::vector<int64_t>& host, int64_t unsettled,
                                   const at::Tensor& used) {
  if (unsettled == 0 || !used.defined()) return host;
  const at::Tensor u = read_back(used);
  return std::vector<int64_t>(u.data_ptr<int64_t>(), u.data_ptr<int64_t>() + u.numel());
}

}  // namespace

int64_t exact_rows_bound(const CodedVectors& c) {
  return counts_bound(c.exact_count, c.exact_unsettled);
}

at::Tensor exact_table(const CodedVectors& c, at::Tensor* scratch) {
  if (c.quantized()) return c.quant.dequantize(scratch);
  const int64_t used = exact_rows_bound(c);
  return c.exact.narrow(1, 0, std::min(used, c.exact.size(1)));  // rows past every bound unused
}

at::ScalarType entry_scalar_type(StorageDtype dtype) {
  switch (dtype) {
    case StorageDtype::kFloat32:
      return at::kFloat;
    case StorageDtype::kFloat16:
      return at::kHalf;
    case StorageDtype::kBFloat16:
      return at::kBFloat16;
  }
  return at::kFloat;
}

at::ScalarType magnitude_scalar_type(StorageDtype dtype) {
  return storage::magnitude_bytes(dtype) == 4 ? at::kFloat : at::kHalf;
}

CodedVectors empty_coded(int64_t kv_heads, int64_t head_dim, const at::TensorOptions& options,
                         StorageDtype dtype) {
  CodedVectors c;
  c.code = at::empty({kv_heads, 0},
                     options.dtype(storage::code_bytes(dtype) == 2 ? at::kShort : at::kInt));
  c.magnitude = at::empty({kv_heads, 0}, options.dtype(magnitude_scalar_type(dtype)));
  c.exact = at::empty({kv_heads, 0, head_dim}, options.dtype(entry_scalar_type(dtype)));
  c.exact_count.assign(kv_heads, 0);
  c.jit = at::empty({kv_heads, 0, head_dim}, options.dtype(entry_scalar_type(dtype)));
  c.jit_count.assign(kv_heads, 0);
  return c;
}

at::Tensor codes_long(const CodedVectors& c) {
  at::Tensor code = c.code.to(at::kLong);
  if (c.code.scalar_type() == at::kShort) {
    code = code.masked_fill(code == kZeroCode16, static_cast<int64_t>(kZeroCode));
  }
  return code;
}

void fit_codes(CodedVectors& out, int64_t lowest, int64_t highest) {
  // Codes start int16 where the storage dtype allows it (empty_coded); the
  // caller's bounds decide, so no code is read back from the device.
  if (out.code.scalar_type() == at::kShort &&
      !(lowest >= std::numeric_limits<int16_t>::min() && highest < kZeroCode16)) {
    out.code = codes_long(out).to(at::kInt);
  }
}

void append_codes(CodedVectors& out, const at::Tensor& codes, int64_t lowest, int64_t highest) {
  fit_codes(out, lowest, highest);
  // While codes are int16, every code but kZeroCode lies below kZeroCode16,
  // so clamping maps exactly kZeroCode to kZeroCode16; the copy into the
  // buffer narrows the dtype. kZeroCode fits int32.
  out.code =
      append_columns(out.code_buffer, out.code,
                     out.code.scalar_type() == at::kShort ? codes.clamp_max(kZeroCode16) : codes);
}

void append_magnitudes(CodedVectors& out, const at::Tensor& magnitudes) {
  // The copy into the buffer converts to the stored dtype.
  out.magnitude = append_columns(out.magnitude_buffer, out.magnitude, magnitudes);
}

std::vector<int64_t> exact_rows_in_use(const CodedVectors& c) {
  return counts_in_use(c.exact_count, c.exact_unsettled, c.exact_used);
}

void settle_exact_rows(CodedVectors& c) {
  if (c.exact_unsettled == 0) return;
  c.exact_count = exact_rows_in_use(c);
  c.exact_unsettled = 0;  // exact_used stays: it agrees with exact_count
}

int64_t jit_entries_bound(const CodedVectors& c) {
  return counts_bound(c.jit_count, c.jit_unsettled);
}

std::vector<int64_t> jit_entries_in_use(const CodedVectors& c) {
  return counts_in_use(c.jit_count, c.jit_unsettled, c.jit_used);
}

void settle_jit_entries(CodedVectors& c) {
  if (c.jit_unsettled > 0) c.jit_count = jit_entries_in_use(c);
  c.jit_unsettled = 0;
  // Made again from jit_count by the next fused append: whoever settles may
  // change jit_count (append_matched builds entries).
  c.jit_used = at::Tensor();
}

namespace {

// The misses `open` [kv, t] become exact rows of `out` at places computed on
// the device, each head's in order after the rows it uses: nothing is read
// back. `rows` [kv, t, d] holds the misses (zero elsewhere), `rank` [kv, t]
// each miss's rank among its head's, `count` [kv, 1] the misses per head and
// `head` [kv, 1] int64 the head indices (SharedMatch::prepare_exact_rows).
// Returns the slots' exact-row codes, -row - 1 [kv, t] (meaningful where
// open), and widens the host bound by t.
at::Tensor append_exact_deferred(CodedVectors& out, const at::Tensor& rows, const at::Tensor& open,
                                 const at::Tensor& rank, const at::Tensor& count,
                                 const at::Tensor& head) {
  const int64_t kv = open.size(0), t = open.size(1);
  if (!out.exact_used.defined()) {
    out.exact_used = to_device(out.exact_count, at::kLong, open.device());
  }
  const at::Tensor row = out.exact_used.view({kv, 1}) + rank;  // [kv, t]
  // Rows in use stay below `bound`; slot `bound` (never in use) takes every
  // vector that is not a miss, as zeros, so the rows past those in use stay zero.
  const int64_t bound = exact_rows_bound(out) + t;
  out.exact = grow_rows(out.exact, bound + 1);
  out.exact.index_put_({head, at::where(open, row, bound)}, rows.to(out.exact.scalar_type()));
  out.exact_used.add_(count.view({kv}));
  out.exact_unsettled += t;
  return at::rsub(row, -1);  // -1 - row
}

}  // namespace

SharedMatch SharedMatch::columns(int64_t s, int64_t count) const {
  SharedMatch m;
  auto cols = [&](const at::Tensor& x) { return x.defined() ? x.narrow(1, s * count, count) : x; };
  m.vectors = cols(vectors);
  m.dirs = cols(dirs);
  m.magnitude = cols(magnitude);
  m.code = cols(code);
  m.open = cols(open);
  m.open_rank = cols(open_rank);
  m.exact_magnitude = cols(exact_magnitude);
  if (exact_rows.defined()) m.exact_rows = exact_rows[s];
  if (open_count.defined()) m.open_count = open_count.narrow(1, s, 1);
  m.head_index = head_index;
  return m;
}

void SharedMatch::prepare_exact_rows(int64_t sequences, at::ScalarType entry) {
  const int64_t kv = open.size(0), N = open.size(1), d = vectors.size(2);
  SKV_CHECK(sequences > 0 && N % sequences == 0, "cannot split ", N, " columns into ", sequences,
            " sequences");
  const int64_t t = N / sequences;
  open_rank = open.view({kv, sequences, t}).to(at::kLong).cumsum(2).sub_(1).view({kv, N});
  open_count = open.view({kv, sequences, t}).sum(2);  // [kv, sequences] int64
  exact_rows = vectors.masked_fill(open.logical_not().unsqueeze(2), 0.0)
                   .view({kv, sequences, t, d})
                   .transpose(0, 1)
                   .to(entry)
                   .contiguous();
  exact_magnitude = at::where(open, 1.0f, magnitude);
  head_index = at::arange(kv, open_rank.options()).view({kv, 1});
}

SharedMatch match_shared(const at::Tensor& vectors_in, const at::Tensor& valid,
                         const CodebookTables& tables, CodebookMode mode) {
  SharedMatch m;
  m.vectors = vectors_in.to(at::kFloat);
  const int64_t kv = m.vectors.size(0), N = m.vectors.size(1);
  std::tie(m.dirs, m.magnitude) = split_magnitude(m.vectors);
  if (valid.defined()) m.magnitude = m.magnitude.masked_fill(valid.logical_not(), 0.0);
  m.code = at::full({kv, N}, static_cast<int64_t>(kZeroCode), m.vectors.options().dtype(at::kLong));
  m.open = m.magnitude > 0;  // vectors that still need a code
  const bool use_calibrated = mode == CodebookMode::kCalibrated || mode == CodebookMode::kHybrid;
  if (use_calibrated && tables.calibrated_capacity() > 0 && N > 0) {
    auto [best, arg] = nearest(m.dirs, tables.calibrated, tables.calibrated_sizes);
    at::Tensor hit = m.open & (best > tables.threshold);
    m.code = at::where(hit, arg, m.code);
    m.open = m.open & hit.logical_not();
  }
  return m;
}

void append_coded(CodedVectors& out, const at::Tensor& vectors, const at::Tensor& valid,
                  const CodebookTables& tables, CodebookMode mode, bool build_jit_from_misses,
                  bool defer_counts) {
  if (vectors.size(1) == 0) return;
  append_matched(out, match_shared(vectors, valid, tables, mode), tables, mode,
                 build_jit_from_misses, defer_counts);
}

void append_matched(CodedVectors& out, const SharedMatch& m, const CodebookTables& tables,
                    CodebookMode mode, bool build_jit_from_misses, bool defer_counts) {
  const at::Tensor& vectors = m.vectors;
  const int64_t kv = vectors.size(0), t = vectors.size(1);
  if (t == 0) return;
  const bool use_jit = mode == CodebookMode::kJustInTime || mode == CodebookMode::kHybrid;
  settle_jit_entries(out);  // entries a fused append built on the device
  // What is decided on the host: where a quantised table's rows go, which
  // just-in-time entries to build. Then the counts are read back first.
  const bool defer = defer_counts && !out.quantized() && !(use_jit && build_jit_from_misses) &&
                     out.exact_unsettled + t <= kExactSettleSlots;
  if (!defer) settle_exact_rows(out);
  at::Tensor code = m.code, open = m.open, mags = m.magnitude;
  bool open_changed = false;  // by the just-in-time stage: m's prepared rows no longer apply
  const int64_t Kc = tables.calibrated_capacity();
  const int64_t jit_total = [&] {
    int64_t s = 0;
    for (int64_t c : out.jit_count) s += c;
    return s;
  }();
  if (use_jit && jit_total > 0) {
    auto [best, arg] = nearest(m.dirs, out.jit, out.jit_count);
    at::Tensor hit = open & (best > tables.threshold);
    code = at::where(hit, arg + Kc, code);
    open = open & hit.logical_not();
    open_changed = true;
  }
  std::vector<int64_t> lengths;  // misses per KV head, read back once
  if (use_jit && build_jit_from_misses) {
    const at::Tensor misses = read_back(open.sum(1));
    lengths.assign(misses.data_ptr<int64_t>(), misses.data_ptr<int64_t>() + kv);
  }
  const int64_t n = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
  if (n > 0) {
    // Algorithm 1 on each KV head's misses, every head at once; the chosen
    // directions become this request's entries. Row j of head g's misses:
    // order[g][j], the j-th open column (columns past the head's misses
    // point at column t, which does not exist).
    const at::Tensor order = set_columns_first(open, n).clamp_max(t);
    const at::Tensor rows = order.clamp_max(t - 1);  // the rows past lengths are ignored
    const JitCodebooks built =
        build_jit_codebooks(m.dirs.gather(1, rows.unsqueeze(2).expand({kv, n, m.dirs.size(2)})),
                            lengths, tables.threshold, JitGraphs::kAuto, kJitGraphBytes,
                            /*skip_zero_rows=*/false);  // misses have magnitude > 0
    std::vector<int64_t> needed = out.jit_count, base(kv);
    for (int64_t g = 0; g < kv; ++g) {
      base[g] = Kc + out.jit_count[g];
      needed[g] += built.first[g + 1] - built.first[g];
    }
    out.jit = grow_rows(out.jit, *std::max_element(needed.begin(), needed.end()));
    for (int64_t g = 0; g < kv; ++g) {
      const int64_t J = built.first[g + 1] - built.first[g];
      if (J > 0)
        out.jit[g].narrow(0, out.jit_count[g], J).copy_(built.entries.narrow(0, built.first[g], J));
      out.jit_count[g] = needed[g];
    }
    // Each miss's code: its entry past the head's earlier ones.
    const at::Tensor jit_code =
        built.index + to_device(base, at::kLong, code.device()).unsqueeze(1);
    code = at::where(
        open, at::zeros({kv, t + 1}, code.options()).scatter_(1, order, jit_code).narrow(1, 0, t),
        code);
    open = at::zeros_like(open);
    open_changed = true;
  }
  if (defer) {
    // The batch's prepared rows, or this call's own where none were prepared
    // or the just-in-time stage changed which vectors stay exact.
    SharedMatch own;
    const SharedMatch* p = &m;
    if (open_changed || !m.open_rank.defined()) {
      own.vectors = vectors;
      own.open = open;
      own.magnitude = mags;
      own.prepare_exact_rows(1, out.exact.scalar_type());
      own = own.columns(0, t);
      p = &own;
    }
    code = at::where(
        open,
        append_exact_deferred(out, p->exact_rows, open, p->open_rank, p->open_count, p->head_index),
        code);
    mags = p->exact_magnitude;
  } else if (!(use_jit && build_jit_from_misses)) {  // that stage leaves no misses
    // Per KV head, read back once: the host sizes the tables.
    const at::Tensor misses = read_back(open.sum(1));
    const int64_t* miss = misses.data_ptr<int64_t>();
    const int64_t most = *std::max_element(miss, miss + kv);
    if (most > 0) {
      // No entry: the vector is kept exact; the r-th miss of head g takes row
      // exact_count[g] + r of that head's table, and its code points there.
      std::vector<int64_t> needed(kv);
      for (int64_t g = 0; g < kv; ++g) needed[g] = out.exact_count[g] + miss[g];
      at::Tensor base = to_device(out.exact_count, at::kLong, vectors.device()).view({kv, 1});
      at::Tensor row = base + open.to(at::kLong).cumsum(1) - 1;  // [kv, t]
      if (out.quantized()) {
        // Each head's misses, in order, join its quantised table.
        const at::Tensor open_cpu = read_back(open);
        for (int64_t g = 0; g < kv; ++g) {
          if (miss[g] == 0) continue;
          at::Tensor which = open_cpu[g].nonzero().view({-1}).to(vectors.device());
          out.quant.append(g, vectors[g].index_select(0, which));
        }
      } else {
        // Head g's misses in order, `most` of them with zero rows past its
        // own, go to rows exact_count[g] .. + most: its new rows, then rows
        // it does not use yet, which stay zero. No read-back: the order is
        // a sort, not a selection of data-dependent size.
        const int64_t from = *std::max_element(out.exact_count.begin(), out.exact_count.end());
        out.exact = grow_rows(out.exact, from + most);
        const int64_t cap = out.exact.size(1), d = vectors.size(2);
        const at::Tensor order = set_columns_first(open, most);  // [kv, most]
        const at::Tensor rows =
            at::where((order < t).unsqueeze(2),
                      vectors.gather(1, order.clamp_max(t - 1).unsqueeze(2).expand({kv, most, d})),
                      at::zeros({}, vectors.options()));
        const at::Tensor dest = base + at::arange(most, row.options()) +
                                at::arange(kv, row.options()).view({kv, 1}) * cap;
        out.exact.view({kv * cap, d})
            .index_copy_(0, dest.reshape({-1}),
                         rows.reshape({kv * most, d}).to(out.exact.scalar_type()));
      }
      code = at::where(open, -row - 1, code);
      mags = at::where(open, at::ones_like(mags), mags);
      out.exact_count = needed;
      out.exact_used = at::Tensor();  // made again from exact_count when next deferred
    }
  }
  // Every code is a calibrated entry, a just-in-time entry or an exact row
  // in use (or kZeroCode), whose bounds the host knows.
  const int64_t most_exact = exact_rows_bound(out);
  const int64_t most_jit = *std::max_element(out.jit_count.begin(), out.jit_count.end());
  append_codes(out, code, -most_exact, Kc + most_jit);
  append_magnitudes(out, mags);
}

}  // namespace detail
}  // namespace spindlekv
