// The methods `spindlekv eval` compares, as configurations of the runtime's
// compressed cache: an eviction policy, a budget allocation and a codebook
// mode. Every method is a CompressedCache, so all are measured by the same
// byte accounting.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/compressed_cache.h"

namespace spindlekv {

struct MethodSpec {
  std::string name;
  BudgetKind budget = BudgetKind::kUniform;
  CodebookMode codebook = CodebookMode::kNone;
  GqaMode gqa = GqaMode::kRepeat;
  std::function<std::shared_ptr<EvictionPolicy>()> make_policy;
  bool full_cache = false;  ///< keeps everything: evaluated once, at ratio 1
  /// "+l0": layer 0 held as token ids (CompressedCache::hold_as_token_ids),
  /// every token kept, the table charged like the calibrated codebook.
  bool token_id_layer0 = false;
  /// A row codec's name (runtime/row_codec.h: "fp8", "kivi4", "tq3",
  /// "q4_0", ...) alone, or as the suffix of a method that evicts
  /// ("snapkv-mean+tq3"): exact keys and values coded so. Empty: none.
  std::string codec;
  /// A pure quantiser: no knob, so it is evaluated once and reported at its
  /// own measured ratio (every token kept, none evicted).
  bool fixed_ratio = false;
  /// Evaluated once rather than at each target ratio.
  bool single_setting() const { return full_cache || fixed_ratio; }
  /// A SpindleKV variant (codebooks), compared against the best baseline.
  bool is_spindle() const { return codebook != CodebookMode::kNone; }
  /// Needs an artifact (calibrated codebooks or budgets).
  bool needs_artifact() const;
};

/// Every method name `spindlekv eval` knows, in its default order.
std::vector<std::string> known_methods();
/// The spec of `name`: a known method, a SpindleKV variant with "+pool"
/// (its eviction max-pools importance over 7 neighbours, as SnapKV does;
/// the paper does not pool), a method that evicts with a quantiser as
/// suffix ("snapkv+kivi4", "spindle+pool+fp8"), each optionally followed by
/// "+l0" (layer 0 held as token ids); throws naming the known methods if
/// unknown.
MethodSpec method_spec(const std::string& name);

}  // namespace spindlekv
