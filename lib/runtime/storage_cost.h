// What the compressed cache spends on each thing it stores, in bytes: the
// one cost model behind CompressedCache::memory() and the calibrated layer
// budgets (export/budget_calibrator.h), so the budgets are planned in the
// bytes the runtime will count.
//
// The storage dtype is what exact rows, codebook entries (calibrated, just
// in time, token tables) and the dense cache of the denominator are held in;
// magnitudes are float16 unless it is float32. Codes are int16 while the
// codes of a (sequence, layer) fit 16 bits and the dtype is not float32,
// else int32.
//
// Exact rows held by a row codec (fp8, KIVI, TurboQuant, q8_0, ...) cost
// what the codec's fields say (runtime/row_codec.h).
#pragma once

#include <cstdint>
#include <string>

namespace spindlekv {

/// The dtype a compressed cache holds vectors in (an engine's KV dtype).
enum class StorageDtype {
  kFloat32,   ///< "float32"
  kFloat16,   ///< "float16"
  kBFloat16,  ///< "bfloat16"
};

const char* to_string(StorageDtype dtype);
/// Parses "float32|float16|bfloat16"; throws naming the allowed values.
StorageDtype parse_storage_dtype(const std::string& name);

namespace storage {

/// An element of an exact row, an entry or a dense K/V vector.
constexpr int64_t element_bytes(StorageDtype dtype) {
  return dtype == StorageDtype::kFloat32 ? 4 : 2;
}
/// A K or V vector's magnitude: float32 with float32 storage, else float16.
constexpr int64_t magnitude_bytes(StorageDtype dtype) {
  return dtype == StorageDtype::kFloat32 ? 4 : 2;
}
/// A K or V vector's code: int16 when the dtype is narrower than float32 and
/// the codes fit (`fits_16_bits`), else int32.
constexpr int64_t code_bytes(StorageDtype dtype, bool fits_16_bits = true) {
  return dtype != StorageDtype::kFloat32 && fits_16_bits ? 2 : 4;
}
constexpr int64_t kPositionBytes = 4;  ///< a slot's position (int32), once a layer evicts

/// A coded (KV head, token) slot beyond its exact rows: code and magnitude
/// for K and for V, and the position (codes that fit 16 bits).
constexpr int64_t coded_slot_bytes(StorageDtype dtype) {
  return 2 * (code_bytes(dtype) + magnitude_bytes(dtype)) + kPositionBytes;
}

/// A vector of `head_dim` elements (exact row, entry, dense K or V).
constexpr int64_t vector_bytes(int64_t head_dim, StorageDtype dtype = StorageDtype::kFloat32) {
  return head_dim * element_bytes(dtype);
}

}  // namespace storage
}  // namespace spindlekv
