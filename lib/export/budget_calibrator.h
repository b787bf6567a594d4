// Calibrated layer budgets (the export stage): per layer, how much of the
// context to keep so that the least attention mass is lost for the bytes
// spent, knowing that a layer whose codebook covers its vectors stores a kept
// token in a few bytes (code + magnitude) instead of a full vector.
//
// For each context ratio r_c, the byte budget is the pyramid's at r_c (so the
// two allocations cost the same); the calibrated allocation maximises the
// mean retained mass over layers within it. The retained-mass curves come
// from the capture (tokens ranked as the runtime ranks them, on calibration text); they are
// made concave (upper hull), so a greedy walk over hull segments by mass per
// byte is optimal.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/layer_budgets.h"
#include "runtime/paper_defaults.h"
#include "runtime/storage_cost.h"

namespace spindlekv {

struct BudgetCalibrationParameters {
  /// Context ratios tabulated in the artifact; the runtime interpolates.
  std::vector<double> context_ratios = {0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3,
                                        0.4,  0.5,  0.6, 0.7,  0.8, 0.9,  1.0};
  double pyramid_beta =
      paper::kPyramidBeta;  ///< also every layer's smallest fraction (or r_c if smaller)
  /// Bytes the runtime spends per kept (KV head, token) beyond exact rows,
  /// and per element of an exact row: the runtime's cost model, for the
  /// cache's storage dtype (float32 by default).
  int64_t slot_overhead_bytes = storage::coded_slot_bytes(StorageDtype::kFloat32);
  int64_t element_bytes = storage::element_bytes(StorageDtype::kFloat32);
};

struct LayerBudgetInput {
  std::vector<double> keep_fractions;  ///< x of the curve, increasing in (0, 1]
  std::vector<double> retained_mass;   ///< mean over heads and sequences
  double key_coverage = 0;             ///< held-out fraction of keys within theta of an entry
  double value_coverage = 0;
};

struct BudgetCalibration {
  BudgetTable pyramid;
  BudgetTable calibrated;
  /// Bytes per kept token relative to a dense token, per layer.
  std::vector<double> relative_token_cost;
  /// Per context ratio: predicted mean retained mass, and predicted bytes
  /// relative to the dense context, of each allocation.
  std::vector<double> pyramid_mass, calibrated_mass;
  std::vector<double> pyramid_bytes, calibrated_bytes;
};

/// Both allocations for `layers` at head size `head_dim`. Throws
/// kInvalidInput naming the layer whose curve is malformed.
BudgetCalibration calibrate_budgets(const std::vector<LayerBudgetInput>& layers, int64_t head_dim,
                                    const BudgetCalibrationParameters& params = {});

/// Retained mass of a curve at fraction f (linear interpolation; below the
/// first point, extrapolated towards the origin).
double retained_mass_at(const LayerBudgetInput& layer, double f);

}  // namespace spindlekv
