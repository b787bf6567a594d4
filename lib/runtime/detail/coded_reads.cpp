#include "runtime/detail/coded_reads.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "core/error.h"
#include "core/rope.h"

namespace spindlekv {
namespace detail {

namespace {

// Rows of a contiguous float32, float16 or bfloat16 table, rotated by RoPE
// as stored: a narrower row is widened inside the row kernel, so no table is
// converted (or copied) as a whole.
class RowRotator {
 public:
  explicit RowRotator(const at::Tensor& t) {
    if (!t.defined() || t.numel() == 0) return;
    type_ = t.scalar_type();
    SKV_CHECK(type_ == at::kFloat || type_ == at::kHalf || type_ == at::kBFloat16, "table dtype ",
              t.scalar_type(), " is not a storage dtype");
    data_ = t.data_ptr();
  }
  /// out [d] = row `index` times `scale`, rotated by the table rows cos, sin.
  void rotate(int64_t index, int64_t d, float scale, const float* cos, const float* sin,
              float* out) const {
    if (type_ == at::kFloat) {
      apply_rope_row(static_cast<const float*>(data_) + index * d, scale, cos, sin, out, d);
    } else if (type_ == at::kHalf) {
      apply_rope_row(static_cast<const c10::Half*>(data_) + index * d, scale, cos, sin, out, d);
    } else {
      apply_rope_row(static_cast<const c10::BFloat16*>(data_) + index * d, scale, cos, sin, out, d);
    }
  }

 private:
  at::ScalarType type_ = at::kFloat;
  const void* data_ = nullptr;
};

}  // namespace

at::Tensor reconstruct(const CodedVectors& c, const CodebookTables& tables) {
  const int64_t kv = c.code.size(0), n = c.code.size(1), d = c.exact.size(2);
  at::Tensor flat = codes_long(c).reshape({-1});
  at::Tensor head = at::arange(kv, flat.options()).repeat_interleave(n);
  at::Tensor out = at::zeros({kv * n, d}, c.magnitude.options().dtype(at::kFloat));
  const int64_t Kc = tables.calibrated_capacity();
  if (Kc > 0) {
    at::Tensor is_cal = (flat >= 0) & (flat < Kc);
    at::Tensor idx = flat.clamp(0, Kc - 1) + (tables.shared() ? at::zeros_like(head) : head * Kc);
    at::Tensor rows = tables.calibrated.reshape({-1, d}).index_select(0, idx).to(at::kFloat);
    out = at::where(is_cal.unsqueeze(1), rows, out);
  }
  const int64_t cap = c.jit.size(1);
  if (cap > 0) {
    at::Tensor is_jit = (flat >= Kc) & (flat < Kc + cap);
    at::Tensor idx = (flat - Kc).clamp(0, cap - 1) + head * cap;
    at::Tensor rows = c.jit.reshape({-1, d}).index_select(0, idx).to(at::kFloat);
    out = at::where(is_jit.unsqueeze(1), rows, out);
  }
  const at::Tensor exact = exact_table(c);
  const int64_t E = exact.size(1);
  if (E > 0) {
    at::Tensor is_exact = flat < 0;
    at::Tensor idx = (-flat - 1).clamp(0, E - 1) + head * E;
    out = at::where(is_exact.unsqueeze(1),
                    exact.reshape({-1, d}).index_select(0, idx).to(at::kFloat), out);
  }
  return (out * c.magnitude.reshape({-1, 1}).to(at::kFloat)).view({kv, n, d});
}

at::Tensor reconstruct_rotated(const CodedVectors& c, const CodebookTables& tables,
                               const at::Tensor& positions, const at::Tensor& cos,
                               const at::Tensor& sin, Workspace* workspace) {
  const int64_t kv = c.code.size(0), n = c.code.size(1), d = c.exact.size(2);
  if (!c.code.is_cpu()) {
    // Other devices: the same computation in ATen operations.
    at::Tensor idx = positions.to(at::kLong).clamp_min(0).reshape({-1});
    return apply_rope(reconstruct(c, tables),
                      RopeTables{cos.index_select(0, idx).view({kv, n, d}),
                                 sin.index_select(0, idx).view({kv, n, d})});
  }
  // Tables are read in their stored dtype (RowRotator): no table is converted
  // (or copied) as a whole.
  at::Tensor out = workspace ? Workspace::take(workspace->keys, kv, n, d, c.magnitude.options())
                             : at::empty({kv, n, d}, c.magnitude.options().dtype(at::kFloat));
  const at::Tensor code = codes_long(c).to(at::kInt).contiguous();
  const at::Tensor mag = c.magnitude.to(at::kFloat).contiguous();
  const at::Tensor pos = positions.contiguous();
  const at::Tensor cal =
      tables.calibrated.defined() ? tables.calibrated.contiguous() : at::Tensor();
  const at::Tensor jit = c.jit.contiguous();
  // The stored table with its capacity (no narrowed copy); quantised rows dequantised.
  const at::Tensor exact = c.quantized()
                               ? c.quant.dequantize(workspace ? &workspace->key_rows : nullptr)
                               : c.exact.contiguous();
  const at::Tensor cos_c = cos.contiguous(), sin_c = sin.contiguous();
  const RowRotator cal_r(cal), jit_r(jit), exact_r(exact);
  const int32_t* code_p = code.data_ptr<int32_t>();
  const int32_t* pos_p = pos.data_ptr<int32_t>();
  const float* mag_p = mag.data_ptr<float>();
  const float* cos_p = cos_c.data_ptr<float>();
  const float* sin_p = sin_c.data_ptr<float>();
  float* out_p = out.data_ptr<float>();
  const int64_t Kc = tables.calibrated_capacity(), cap = c.jit.size(1);
  const int64_t exact_cap = exact.size(1);
  const bool shared = tables.shared();
  at::parallel_for(0, kv * n, 512, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g = i / n;
      const int64_t cd = code_p[i];
      float* o = out_p + i * d;
      const RowRotator* table = nullptr;
      int64_t index = 0;
      if (cd >= 0 && cd < Kc) {
        table = &cal_r, index = (shared ? 0 : g) * Kc + cd;
      } else if (cd >= Kc && cd < Kc + cap) {
        table = &jit_r, index = g * cap + (cd - Kc);
      } else if (cd < 0) {
        table = &exact_r, index = g * exact_cap + (-cd - 1);
      }
      if (table == nullptr || pos_p[i] < 0) {
        std::fill(o, o + d, 0.0f);
        continue;
      }
      const int64_t row = static_cast<int64_t>(pos_p[i]) * d;
      table->rotate(index, d, mag_p[i], cos_p + row, sin_p + row, o);
    }
  });
  return out;
}

at::Tensor weighted_sum(const CodedVectors& c, const CodebookTables& tables,
                        const at::Tensor& weights, Workspace* workspace) {
  const int64_t kv = c.code.size(0), R = weights.size(1), d = c.exact.size(2);
  at::Tensor code = codes_long(c).unsqueeze(1).expand({kv, R, c.code.size(1)});
  at::Tensor w = weights * c.magnitude.to(weights.scalar_type()).unsqueeze(1);  // [kv, R, n]
  at::Tensor out = at::zeros({kv, R, d}, weights.options());
  auto add_table = [&](const at::Tensor& in_range, const at::Tensor& index, int64_t size,
                       const at::Tensor& table) {
    at::Tensor per_entry = at::zeros({kv, R, size}, weights.options());
    per_entry.scatter_add_(2, index.clamp(0, size - 1), w * in_range);
    // A table stored narrower is widened a slice of rows at a time: small
    // buffers the allocator reuses, never a copy of the whole table.
    const int64_t step = table.scalar_type() == weights.scalar_type() ? size : 1024;
    for (int64_t start = 0; start < size; start += step) {
      const int64_t m = std::min(step, size - start);
      out.baddbmm_(per_entry.narrow(2, start, m),
                   table.narrow(1, start, m).to(weights.scalar_type()));
    }
  };
  const int64_t Kc = tables.calibrated_capacity();
  if (Kc > 0) {
    at::Tensor t = tables.shared() ? tables.calibrated.expand({kv, Kc, d}) : tables.calibrated;
    add_table(((code >= 0) & (code < Kc)).to(w.scalar_type()), code, Kc, t);
  }
  const int64_t cap = c.jit.size(1);
  if (cap > 0) {
    add_table(((code >= Kc) & (code < Kc + cap)).to(w.scalar_type()), code - Kc, cap, c.jit);
  }
  const at::Tensor exact = exact_table(c, workspace ? &workspace->value_rows : nullptr);
  const int64_t E = exact.size(1);
  if (E > 0) add_table((code < 0).to(w.scalar_type()), -code - 1, E, exact);
  return out;
}

}  // namespace detail
}  // namespace spindlekv
