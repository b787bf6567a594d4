// What the compressed cache spends on each thing it stores, in bytes: the
// one cost model behind CompressedCache::memory() and the calibrated layer
// budgets (export/budget_calibrator.h), so the budgets are planned in the
// bytes the runtime will count.
#pragma once

#include <cstdint>

namespace spindlekv {
namespace storage {

constexpr int64_t kElementBytes =
    4;  ///< an element of an exact row, a codebook entry, a dense K/V (float32)
constexpr int64_t kCodeBytes = 4;       ///< a K or V vector's code (int32)
constexpr int64_t kMagnitudeBytes = 4;  ///< a K or V vector's magnitude (float32)
constexpr int64_t kPositionBytes = 4;   ///< a slot's position (int32), once a layer evicts

/// A coded (KV head, token) slot beyond its exact rows: code and magnitude
/// for K and for V, and the position.
constexpr int64_t kCodedSlotBytes = 2 * (kCodeBytes + kMagnitudeBytes) + kPositionBytes;

/// A token id of a layer held as token ids, for a table of `vocab` rows.
constexpr int64_t token_id_bytes(int64_t vocab) { return vocab <= 65536 ? 2 : 4; }

/// A vector of `head_dim` elements (exact row, entry, dense K or V).
constexpr int64_t vector_bytes(int64_t head_dim) { return head_dim * kElementBytes; }

}  // namespace storage
}  // namespace spindlekv
