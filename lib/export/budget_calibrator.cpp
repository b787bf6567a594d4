#include "export/budget_calibrator.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace spindlekv {
namespace {

struct Point {
  double f, mass;
};

// Upper concave hull of the curve restricted to [lo, 1], from lo.
std::vector<Point> concave_hull(const LayerBudgetInput& L, double lo) {
  std::vector<Point> pts{{lo, retained_mass_at(L, lo)}};
  for (size_t i = 0; i < L.keep_fractions.size(); ++i) {
    if (L.keep_fractions[i] > lo + 1e-12) pts.push_back({L.keep_fractions[i], L.retained_mass[i]});
  }
  if (pts.back().f < 1 - 1e-12) pts.push_back({1.0, retained_mass_at(L, 1.0)});
  std::vector<Point> hull;
  for (const Point& p : pts) {
    while (hull.size() >= 2) {
      const Point& a = hull[hull.size() - 2];
      const Point& b = hull.back();
      // Drop b if it lies on or below the chord a-p.
      if ((b.mass - a.mass) * (p.f - a.f) <= (p.mass - a.mass) * (b.f - a.f)) {
        hull.pop_back();
      } else {
        break;
      }
    }
    hull.push_back(p);
  }
  return hull;
}

struct Segment {
  int64_t layer;
  double df, dmass, cost;  // cost: bytes of df
  double slope() const { return cost > 0 ? dmass / cost : INFINITY; }
};

}  // namespace

double retained_mass_at(const LayerBudgetInput& L, double f) {
  const auto& x = L.keep_fractions;
  const auto& y = L.retained_mass;
  if (f >= x.back()) return y.back();
  if (f <= x.front()) {
    // Extrapolate the first segment towards f = 0 (the window's own mass).
    const double slope = x.size() > 1 ? (y[1] - y[0]) / (x[1] - x[0]) : 0.0;
    return std::clamp(y[0] - slope * (x[0] - f), 0.0, y[0]);
  }
  const size_t j = static_cast<size_t>(std::upper_bound(x.begin(), x.end(), f) - x.begin());
  const double t = (f - x[j - 1]) / (x[j] - x[j - 1]);
  return y[j - 1] + (y[j] - y[j - 1]) * t;
}

BudgetCalibration calibrate_budgets(const std::vector<LayerBudgetInput>& layers, int64_t head_dim,
                                    const BudgetCalibrationParameters& p) {
  const int64_t L = static_cast<int64_t>(layers.size());
  SKV_CHECK_GT(L, 0, "no layers to calibrate budgets for");
  SKV_CHECK_GT(head_dim, 0, "head_dim");
  for (int64_t l = 0; l < L; ++l) {
    const LayerBudgetInput& in = layers[l];
    SKV_CHECK(!in.keep_fractions.empty() && in.keep_fractions.size() == in.retained_mass.size(),
              "layer ", l, ": retained-mass curve has ", in.retained_mass.size(), " values for ",
              in.keep_fractions.size(), " fractions");
    for (size_t i = 0; i < in.keep_fractions.size(); ++i) {
      SKV_CHECK(std::isfinite(in.retained_mass[i]) && in.retained_mass[i] >= -1e-6 &&
                    in.retained_mass[i] <= 1 + 1e-6,
                "layer ", l, ": retained mass ", in.retained_mass[i], " outside [0, 1]");
      SKV_CHECK(in.keep_fractions[i] > 0 && in.keep_fractions[i] <= 1 &&
                    (i == 0 || in.keep_fractions[i] > in.keep_fractions[i - 1]),
                "layer ", l, ": keep fractions must increase within (0, 1]");
    }
    SKV_CHECK(in.key_coverage >= 0 && in.key_coverage <= 1 && in.value_coverage >= 0 &&
                  in.value_coverage <= 1,
              "layer ", l, ": coverage outside [0, 1]");
  }
  BudgetCalibration out;
  const double dense = 2.0 * static_cast<double>(head_dim * p.element_bytes);
  for (const LayerBudgetInput& in : layers) {
    const double exact = (2 - in.key_coverage - in.value_coverage) * head_dim * p.element_bytes;
    out.relative_token_cost.push_back((p.slot_overhead_bytes + exact) / dense);
  }
  out.pyramid.context_ratios = out.calibrated.context_ratios = p.context_ratios;
  for (double rc : p.context_ratios) {
    const std::vector<double> pyr = pyramid_keep_fractions(rc, L, p.pyramid_beta);
    double budget = 0, pyr_mass = 0;
    for (int64_t l = 0; l < L; ++l) {
      budget += pyr[l] * out.relative_token_cost[l];
      pyr_mass += retained_mass_at(layers[l], pyr[l]) / L;
    }
    // Greedy over concave-hull segments, best mass per byte first.
    const double floor = std::min(p.pyramid_beta, rc);
    std::vector<double> f(L, floor);
    double spent = 0;
    std::vector<Segment> segments;
    for (int64_t l = 0; l < L; ++l) {
      spent += floor * out.relative_token_cost[l];
      const auto hull = concave_hull(layers[l], floor);
      for (size_t i = 1; i < hull.size(); ++i) {
        const double df = hull[i].f - hull[i - 1].f;
        segments.push_back(
            {l, df, hull[i].mass - hull[i - 1].mass, df * out.relative_token_cost[l]});
      }
    }
    std::stable_sort(segments.begin(), segments.end(),
                     [](const Segment& a, const Segment& b) { return a.slope() > b.slope(); });
    double left = budget - spent;
    for (const Segment& s : segments) {
      if (left <= 1e-12) break;
      const double take = s.cost <= left ? 1.0 : left / s.cost;
      f[s.layer] = std::min(1.0, f[s.layer] + take * s.df);
      left -= take * s.cost;
    }
    double cal_mass = 0, cal_bytes = 0;
    for (int64_t l = 0; l < L; ++l) {
      cal_mass += retained_mass_at(layers[l], f[l]) / L;
      cal_bytes += f[l] * out.relative_token_cost[l] / L;
    }
    out.pyramid.fractions.push_back(pyr);
    out.calibrated.fractions.push_back(f);
    out.pyramid_mass.push_back(pyr_mass);
    out.calibrated_mass.push_back(cal_mass);
    out.pyramid_bytes.push_back(budget / L);
    out.calibrated_bytes.push_back(cal_bytes);
  }
  return out;
}

}  // namespace spindlekv
