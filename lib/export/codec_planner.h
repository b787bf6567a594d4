// The calibrated byte plan (the export stage): per layer and side (K, V),
// which candidate row codec to use so that the summed measured sensitivity
// (runtime/codec_plan.h) is least within a budget of mean coded bytes per
// row. Each (layer, side) is a list of options (bytes, KL); the plan walks
// their lower convex hulls greedily, best KL saved per byte first, then adds
// any single upgrade that still fits (a multiple-choice knapsack, solved
// near-optimally: exactly at the hull's corners).
#pragma once

#include <string>

#include "runtime/codec_plan.h"

namespace spindlekv {

/// The plan named `name` within `budget_row_bytes` mean coded bytes per row
/// (the bytes of `budget_codec`, recorded). Throws kInvalidInput when the
/// sensitivity table is malformed or its cheapest candidates already cost
/// more than the budget, naming both.
CodecPlan plan_codecs(const CodecSensitivity& sensitivity, const std::string& name,
                      const std::string& budget_codec, double budget_row_bytes);

}  // namespace spindlekv
