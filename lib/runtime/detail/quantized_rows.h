// Internal: the exact rows of a cache held by a row codec (runtime/row_codec.h),
// per KV head. Not installed; include only from lib/runtime/*.cpp and tests.
//
// Rows of head g are numbered in the order they were appended: rows
// [0, quantized[g]) are coded, rows [quantized[g], quantized[g] +
// tail_count[g]) wait in the storage dtype (the recent window, as long as the
// codec's rows_to_code() keeps them). Rows move from the tail to the coded
// part in order, so a row keeps its number. What is stored per coded row,
// per block of rows and per head are the codec's fields.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/detail/row_formats.h"
#include "runtime/row_codec.h"
#include "runtime/storage_cost.h"

namespace spindlekv {
namespace detail {

struct QuantizedRows {
  std::shared_ptr<const RowCoder> coder;  ///< null: rows are not coded
  StorageDtype dtype = StorageDtype::kFloat32;
  int64_t head_dim = 0;
  /// In coder->fields() order: kRow / kBlock fields [kv_heads, capacity, ...]
  /// (grown by doubling, zero past what is used), kHead ones [kv_heads, ...].
  std::vector<at::Tensor> fields;
  std::vector<int64_t> quantized;   ///< rows coded per head
  at::Tensor tail;                  ///< [kv_heads, capacity, head_dim] storage dtype
  std::vector<int64_t> tail_count;  ///< rows waiting per head

  /// An empty table for `kv_heads` heads on the device of `options`.
  static QuantizedRows empty(std::shared_ptr<const RowCoder> coder, StorageDtype dtype,
                             int64_t kv_heads, int64_t head_dim, const at::TensorOptions& options);
  /// Appends rows [m, head_dim] (float32) to head g, then codes what the
  /// codec's rows_to_code() says.
  void append(int64_t g, const at::Tensor& rows);
  /// Every head's rows, decoded: [kv_heads, max rows, head_dim] float32,
  /// zero past a head's count; written into `scratch` (Workspace::take) when
  /// given, else a fresh tensor.
  at::Tensor dequantize(at::Tensor* scratch = nullptr) const;
  int64_t rows(int64_t g) const { return quantized[g] + tail_count[g]; }
  /// Bytes the rows need: every field's entries in use, the tail's rows.
  int64_t held_bytes() const;
  /// Bytes of every tensor, padding included.
  int64_t allocated_bytes() const;
  /// The field named `name`; throws if the codec has none.
  const at::Tensor& field(const std::string& name) const;
  at::Tensor& field(const std::string& name);
  /// Entries of `field` in use for `rows` coded rows.
  int64_t entries(const RowField& field, int64_t rows) const;

 private:
  void quantize_front(int64_t g, int64_t m);
  /// Coded rows [start, start + m) of every head, float32 [kv_heads, m, head_dim].
  at::Tensor dequantize_block(int64_t start, int64_t m) const;
};

}  // namespace detail
}  // namespace spindlekv
