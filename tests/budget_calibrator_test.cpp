#include "export/budget_calibrator.h"

#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

namespace spindlekv {
namespace {

LayerBudgetInput linear_layer(double coverage) {
  LayerBudgetInput in;
  in.keep_fractions = {0.25, 0.5, 0.75, 1.0};
  in.retained_mass = {0.25, 0.5, 0.75, 1.0};
  in.key_coverage = in.value_coverage = coverage;
  return in;
}

LayerBudgetInput flat_layer() {
  LayerBudgetInput in = linear_layer(0);
  in.retained_mass = {1, 1, 1, 1};
  return in;
}

BudgetCalibrationParameters one_ratio(double rc) {
  BudgetCalibrationParameters p;
  p.context_ratios = {rc};
  return p;
}

TEST(BudgetCalibrator, CheapLayersKeepMoreForTheSameBytes) {
  // Layer 0 has no codebook coverage (a kept token costs a dense vector plus
  // overhead), layer 1 full coverage (only code, magnitude and position).
  const int64_t d = 32;
  const auto r = calibrate_budgets({linear_layer(0.0), linear_layer(1.0)}, d, one_ratio(0.3));
  const double a = r.relative_token_cost[1], b = r.relative_token_cost[0];
  EXPECT_NEAR(a, 20.0 / 256, 1e-12);
  EXPECT_NEAR(b, (20.0 + 256) / 256, 1e-12);
  // Pyramid at r_c = 0.3 over two layers: 0.55 and 0.05. Its bytes are the
  // budget; from the 0.05 floors, layer 1 (cheap, same mass per fraction)
  // fills to 1 first, the rest goes to layer 0.
  EXPECT_NEAR(r.pyramid.fractions[0][0], 0.55, 1e-12);
  EXPECT_NEAR(r.pyramid.fractions[0][1], 0.05, 1e-12);
  const double left = 0.5 * b - 0.95 * a;
  EXPECT_NEAR(r.calibrated.fractions[0][1], 1.0, 1e-12);
  EXPECT_NEAR(r.calibrated.fractions[0][0], 0.05 + left / b, 1e-9);
  EXPECT_NEAR(r.calibrated_bytes[0], r.pyramid_bytes[0], 1e-9);
  EXPECT_GT(r.calibrated_mass[0], r.pyramid_mass[0]);
}

TEST(BudgetCalibrator, LayersThatNeedNoContextGetTheFloor) {
  const auto r = calibrate_budgets({flat_layer(), linear_layer(0.0)}, 16, one_ratio(0.5));
  // Pyramid: 0.95 / 0.05; calibrated moves the budget to the layer that loses mass.
  EXPECT_NEAR(r.calibrated.fractions[0][0], 0.05, 1e-12);
  EXPECT_NEAR(r.calibrated.fractions[0][1], 0.95, 1e-12);
  EXPECT_NEAR(r.pyramid_mass[0], (1 + 0.05) / 2, 1e-12);
  EXPECT_NEAR(r.calibrated_mass[0], (1 + 0.95) / 2, 1e-12);
}

TEST(BudgetCalibrator, NeverLosesMassAgainstThePyramid) {
  std::vector<LayerBudgetInput> layers;
  for (int l = 0; l < 6; ++l) {
    LayerBudgetInput in;
    in.keep_fractions = {0.05, 0.1, 0.2, 0.4, 0.7, 1.0};
    const double s = 0.5 + l;  // deeper layers concentrate
    for (double f : in.keep_fractions) in.retained_mass.push_back(1 - std::pow(1 - f, s));
    in.key_coverage = 1.0 - 0.1 * l;
    in.value_coverage = 1.0 - 0.15 * l;
    layers.push_back(in);
  }
  const auto r = calibrate_budgets(layers, 64);
  for (size_t i = 0; i < r.pyramid.context_ratios.size(); ++i) {
    EXPECT_GE(r.calibrated_mass[i], r.pyramid_mass[i] - 1e-12) << r.pyramid.context_ratios[i];
    EXPECT_LE(r.calibrated_bytes[i], r.pyramid_bytes[i] + 1e-9);
    for (double f : r.calibrated.fractions[i]) EXPECT_TRUE(f >= 0 && f <= 1);
  }
  r.calibrated.validate(6);
}

TEST(BudgetCalibrator, MalformedCurvesNameTheLayer) {
  LayerBudgetInput bad = linear_layer(0.5);
  bad.retained_mass[2] = 1.7;
  EXPECT_SKV_ERROR(calibrate_budgets({linear_layer(0.5), bad}, 8), "layer 1: retained mass 1.7");
  bad = linear_layer(0.5);
  bad.keep_fractions = {0.5, 0.25, 0.75, 1.0};
  EXPECT_SKV_ERROR(calibrate_budgets({bad}, 8), "must increase");
}

TEST(BudgetCalibrator, MassIsInterpolatedAndExtrapolatedTowardsZero) {
  const LayerBudgetInput in = linear_layer(0);
  EXPECT_NEAR(retained_mass_at(in, 0.6), 0.6, 1e-12);
  EXPECT_NEAR(retained_mass_at(in, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(retained_mass_at(in, 1.0), 1.0, 1e-12);
}

}  // namespace
}  // namespace spindlekv
