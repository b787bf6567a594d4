#include "runtime/detail/quantized_rows.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/error.h"
#include "runtime/detail/compressed_storage.h"

namespace spindlekv {
namespace detail {
namespace {

int64_t nbytes(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

}  // namespace

QuantizedRows QuantizedRows::empty(std::shared_ptr<const RowCoder> coder, StorageDtype dtype,
                                   int64_t kv, int64_t d, const at::TensorOptions& options) {
  SKV_CHECK(coder != nullptr, "a coded table needs a codec");
  QuantizedRows r;
  r.coder = std::move(coder);
  r.dtype = dtype;
  r.head_dim = d;
  std::vector<at::Tensor> head = r.coder->initial_head_fields(options);
  size_t next_head = 0;
  for (const RowField& f : r.coder->fields()) {
    if (f.per == RowField::Per::kHead) {
      SKV_CHECK(next_head < head.size(), "codec gave too few initial head fields");
      r.fields.push_back(head[next_head++]);
      continue;
    }
    std::vector<int64_t> shape = {kv, 0};
    shape.insert(shape.end(), f.shape.begin(), f.shape.end());
    r.fields.push_back(at::zeros(shape, options.dtype(f.dtype)));
  }
  r.quantized.assign(kv, 0);
  r.tail = at::zeros({kv, 0, d}, options.dtype(entry_scalar_type(dtype)));
  r.tail_count.assign(kv, 0);
  return r;
}

int64_t QuantizedRows::entries(const RowField& f, int64_t rows) const {
  switch (f.per) {
    case RowField::Per::kRow:
      return rows;
    case RowField::Per::kBlock:
      return rows / coder->block_rows();
    case RowField::Per::kHead:
      return rows > 0 ? 1 : 0;
  }
  return 0;
}

const at::Tensor& QuantizedRows::field(const std::string& name) const {
  const std::vector<RowField>& fs = coder->fields();
  for (size_t i = 0; i < fs.size(); ++i) {
    if (fs[i].name == name) return fields[i];
  }
  SKV_THROW(kInvalidInput, "the codec has no field '", name, "'");
}

at::Tensor& QuantizedRows::field(const std::string& name) {
  return const_cast<at::Tensor&>(static_cast<const QuantizedRows&>(*this).field(name));
}

void QuantizedRows::append(int64_t g, const at::Tensor& rows_in) {
  const int64_t m = rows_in.size(0);
  if (m == 0) return;
  const int64_t tc = tail_count[g];
  tail = grow_rows(tail, tc + m);
  tail[g].narrow(0, tc, m).copy_(rows_in.to(at::kFloat));
  tail_count[g] = tc + m;
  const int64_t code = coder->rows_to_code(tail_count[g]);
  SKV_CHECK(code >= 0 && code <= tail_count[g] && code % coder->block_rows() == 0,
            "codec asked to code ", code, " of ", tail_count[g], " waiting rows");
  if (code > 0) quantize_front(g, code);
  // A prefill passes its rows through the tail at once; once they are coded
  // only the recent window waits there. Give the prefill's capacity back,
  // or the tail would keep a prefill's worth of rows for good.
  int64_t waiting = 0;
  for (int64_t c : tail_count) waiting = std::max(waiting, c);
  const int64_t keep = std::max<int64_t>(2 * waiting, 64);
  if (tail.size(1) > 2 * keep) tail = tail.narrow(1, 0, keep).clone();
}

void QuantizedRows::quantize_front(int64_t g, int64_t m) {
  const int64_t q0 = quantized[g];
  const at::Tensor x = tail[g].narrow(0, 0, m).to(at::kFloat);
  const std::vector<RowField>& fs = coder->fields();
  std::vector<at::Tensor> head;
  for (size_t i = 0; i < fs.size(); ++i) {
    if (fs[i].per == RowField::Per::kHead) head.push_back(fields[i]);
  }
  const std::vector<at::Tensor> coded = coder->encode(x, g, head);
  size_t next = 0, next_head = 0;
  for (size_t i = 0; i < fs.size(); ++i) {
    if (fs[i].per == RowField::Per::kHead) {
      fields[i] = head[next_head++];
      continue;
    }
    SKV_CHECK(next < coded.size(), "codec coded too few fields");
    const int64_t first = entries(fs[i], q0), n = entries(fs[i], q0 + m) - first;
    fields[i] = grow_rows(fields[i], first + n);
    fields[i][g].narrow(0, first, n).copy_(coded[next++]);
  }
  const int64_t left = tail_count[g] - m;
  if (left > 0) tail[g].narrow(0, 0, left).copy_(tail[g].narrow(0, m, left).clone());
  tail[g].narrow(0, left, m).zero_();
  quantized[g] = q0 + m;
  tail_count[g] = left;
}

at::Tensor QuantizedRows::dequantize_block(int64_t start, int64_t m) const {
  const std::vector<RowField>& fs = coder->fields();
  std::vector<at::Tensor> view;
  for (size_t i = 0; i < fs.size(); ++i) {
    if (fs[i].per == RowField::Per::kHead) {
      view.push_back(fields[i]);
    } else {
      const int64_t first = entries(fs[i], start);
      view.push_back(fields[i].narrow(1, first, entries(fs[i], start + m) - first));
    }
  }
  return coder->decode(view, m);
}

at::Tensor QuantizedRows::dequantize(at::Tensor* scratch) const {
  const int64_t kv = static_cast<int64_t>(quantized.size()), d = head_dim;
  int64_t E = 0, Q = 0;
  for (int64_t g = 0; g < kv; ++g) {
    E = std::max(E, rows(g));
    Q = std::max(Q, quantized[g]);
  }
  at::Tensor out;
  if (scratch != nullptr) {
    out = Workspace::take(*scratch, kv, E, d, tail.options());
    for (int64_t g = 0; g < kv; ++g) out[g].narrow(0, rows(g), E - rows(g)).zero_();  // padding
  } else {
    out = at::zeros({kv, E, d}, tail.options().dtype(at::kFloat));
  }
  if (Q > 0 &&
      !(out.is_cpu() && coder->decode_on_host(fields, quantized, E, out.data_ptr<float>()))) {
    // A block of rows at a time, so the decoding's temporaries stay small.
    const int64_t br = coder->block_rows();
    const int64_t block = std::max<int64_t>(1, 1024 / br) * br;
    for (int64_t start = 0; start < Q; start += block) {
      const int64_t m = std::min(block, Q - start);
      const at::Tensor deq = dequantize_block(start, m);
      for (int64_t g = 0; g < kv; ++g) {
        const int64_t mg = std::min(m, quantized[g] - start);
        if (mg > 0) out[g].narrow(0, start, mg).copy_(deq[g].narrow(0, 0, mg));
      }
    }
  }
  for (int64_t g = 0; g < kv; ++g) {
    if (tail_count[g] > 0) {
      out[g].narrow(0, quantized[g], tail_count[g]).copy_(tail[g].narrow(0, 0, tail_count[g]));
    }
  }
  return out;
}

int64_t QuantizedRows::held_bytes() const {
  const std::vector<RowField>& fs = coder->fields();
  int64_t total = 0;
  for (size_t g = 0; g < quantized.size(); ++g) {
    for (const RowField& f : fs) {
      total += entries(f, f.per == RowField::Per::kHead ? rows(g) : quantized[g]) * f.entry_bytes();
    }
    total += tail_count[g] * storage::vector_bytes(head_dim, dtype);
  }
  return total;
}

int64_t QuantizedRows::allocated_bytes() const {
  int64_t total = nbytes(tail);
  for (const at::Tensor& t : fields) total += nbytes(t);
  return total;
}

}  // namespace detail
}  // namespace spindlekv
