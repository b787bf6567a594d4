#include "runtime/detail/compressed_storage.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "common/error.h"
#include "runtime/codebook_builder.h"

namespace spindlekv {
namespace detail {
namespace {

// Best entry of `table` [groups, K, d] for each direction [kv, t, d], with
// entries past `counts[g]` excluded. Returns (similarity, index) [kv, t].
std::pair<at::Tensor, at::Tensor> nearest(const at::Tensor& dirs, const at::Tensor& table,
                                          const std::vector<int64_t>& counts) {
  const int64_t kv = dirs.size(0), K = table.size(1);
  at::Tensor t = table.size(0) == 1 ? table.expand({kv, K, table.size(2)}) : table;
  at::Tensor sims = at::bmm(dirs, t.transpose(1, 2));  // [kv, t, K]
  std::vector<int64_t> per_head(kv);
  for (int64_t g = 0; g < kv; ++g) per_head[g] = counts[counts.size() == 1 ? 0 : g];
  at::Tensor limit = at::tensor(per_head, at::kLong).to(dirs.device()).view({kv, 1, 1});
  at::Tensor slot = at::arange(K, dirs.options().dtype(at::kLong)).view({1, 1, K});
  sims = sims.masked_fill(slot >= limit, -3.0);
  auto [best, arg] = sims.max(2);
  return {best, arg};
}

at::Tensor grow_jit(const at::Tensor& jit, int64_t needed) {
  const int64_t cap = jit.size(1);
  if (needed <= cap) return jit;
  const int64_t new_cap = std::max(needed, 2 * cap);
  at::Tensor pad = at::zeros({jit.size(0), new_cap - cap, jit.size(2)}, jit.options());
  return at::cat({jit, pad}, 1);
}

}  // namespace

CodedVectors empty_coded(int64_t kv_heads, int64_t head_dim, const at::TensorOptions& options) {
  CodedVectors c;
  c.code = at::empty({kv_heads, 0}, options.dtype(at::kInt));
  c.magnitude = at::empty({kv_heads, 0}, options.dtype(at::kFloat));
  c.exact = at::empty({0, head_dim}, options.dtype(at::kFloat));
  c.jit = at::empty({kv_heads, 0, head_dim}, options.dtype(at::kFloat));
  c.jit_count.assign(kv_heads, 0);
  return c;
}

void append_coded(CodedVectors& out, const at::Tensor& vectors_in, const at::Tensor& valid,
                  const CodebookTables& tables, CodingMode mode, bool build_jit_from_misses) {
  const at::Tensor vectors = vectors_in.to(at::kFloat);
  const int64_t kv = vectors.size(0), t = vectors.size(1);
  if (t == 0) return;
  auto [dirs, mags] = split_magnitude(vectors);
  mags = mags.masked_fill(valid.logical_not(), 0.0);
  at::Tensor code =
      at::full({kv, t}, static_cast<int64_t>(kZeroCode), vectors.options().dtype(at::kLong));
  at::Tensor open = mags > 0;  // vectors that still need a code
  const int64_t Kc = tables.calibrated_capacity();
  const bool use_calibrated = mode == CodingMode::kCalibrated || mode == CodingMode::kHybrid;
  const bool use_jit = mode == CodingMode::kJustInTime || mode == CodingMode::kHybrid;

  if (use_calibrated && Kc > 0) {
    auto [best, arg] = nearest(dirs, tables.calibrated, tables.calibrated_sizes);
    at::Tensor hit = open & (best > tables.threshold);
    code = at::where(hit, arg, code);
    open = open & hit.logical_not();
  }
  const int64_t jit_total = [&] {
    int64_t s = 0;
    for (int64_t c : out.jit_count) s += c;
    return s;
  }();
  if (use_jit && jit_total > 0) {
    auto [best, arg] = nearest(dirs, out.jit, out.jit_count);
    at::Tensor hit = open & (best > tables.threshold);
    code = at::where(hit, arg + Kc, code);
    open = open & hit.logical_not();
  }
  if (use_jit && build_jit_from_misses && open.any().item<bool>()) {
    // Algorithm 1 on each KV head's misses; the chosen directions become
    // this request's entries.
    at::Tensor open_cpu = open.to(at::kCPU);
    std::vector<int64_t> needed = out.jit_count;
    std::vector<JitCodebook> built(kv);
    std::vector<at::Tensor> rows(kv);
    for (int64_t g = 0; g < kv; ++g) {
      rows[g] = open_cpu[g].nonzero().view({-1}).to(vectors.device());
      if (rows[g].numel() == 0) continue;
      built[g] = build_jit_codebook(dirs[g].index_select(0, rows[g]), tables.threshold);
      needed[g] += built[g].entries.size(0);
    }
    out.jit = grow_jit(out.jit, *std::max_element(needed.begin(), needed.end()));
    for (int64_t g = 0; g < kv; ++g) {
      if (rows[g].numel() == 0) continue;
      const int64_t base = out.jit_count[g], J = built[g].entries.size(0);
      out.jit[g].narrow(0, base, J).copy_(built[g].entries);
      code[g].index_copy_(0, rows[g], built[g].index + (Kc + base));
      out.jit_count[g] += J;
    }
    open = at::zeros_like(open);
  }
  if (open.any().item<bool>()) {
    // No entry: the vector is kept exact, its code pointing at its row.
    const int64_t base = out.exact.size(0);
    at::Tensor flat = open.view({-1}).nonzero().view({-1});
    const int64_t m = flat.size(0);
    out.exact = at::cat({out.exact, vectors.reshape({kv * t, -1}).index_select(0, flat)}, 0);
    at::Tensor exact_code = -(at::arange(base, base + m, flat.options())) - 1;
    code = code.view({-1}).index_copy(0, flat, exact_code).view({kv, t});
    mags = mags.view({-1}).index_fill(0, flat, 1.0).view({kv, t});
  }
  out.code = at::cat({out.code, code.to(at::kInt)}, 1);
  out.magnitude = at::cat({out.magnitude, mags}, 1);
}

at::Tensor reconstruct(const CodedVectors& c, const CodebookTables& tables) {
  const int64_t kv = c.code.size(0), n = c.code.size(1), d = c.exact.size(1);
  at::Tensor flat = c.code.reshape({-1}).to(at::kLong);
  at::Tensor head = at::arange(kv, flat.options()).repeat_interleave(n);
  at::Tensor out = at::zeros({kv * n, d}, c.magnitude.options());
  const int64_t Kc = tables.calibrated_capacity();
  if (Kc > 0) {
    at::Tensor is_cal = (flat >= 0) & (flat < Kc);
    at::Tensor idx = flat.clamp(0, Kc - 1) + (tables.shared() ? at::zeros_like(head) : head * Kc);
    at::Tensor rows = tables.calibrated.reshape({-1, d}).index_select(0, idx);
    out = at::where(is_cal.unsqueeze(1), rows, out);
  }
  const int64_t cap = c.jit.size(1);
  if (cap > 0) {
    at::Tensor is_jit = (flat >= Kc) & (flat < Kc + cap);
    at::Tensor idx = (flat - Kc).clamp(0, cap - 1) + head * cap;
    at::Tensor rows = c.jit.reshape({-1, d}).index_select(0, idx);
    out = at::where(is_jit.unsqueeze(1), rows, out);
  }
  const int64_t E = c.exact.size(0);
  if (E > 0) {
    at::Tensor is_exact = flat < 0;
    at::Tensor idx = (-flat - 1).clamp(0, E - 1);
    out = at::where(is_exact.unsqueeze(1), c.exact.index_select(0, idx), out);
  }
  return (out * c.magnitude.reshape({-1, 1})).view({kv, n, d});
}

}  // namespace detail
}  // namespace spindlekv
