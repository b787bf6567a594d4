#include "export/codec_planner.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace spindlekv {
namespace {

// One (layer, side): its candidates' (bytes, KL) and the one chosen.
struct Item {
  const std::vector<double>* kl;
  std::vector<size_t> hull;  // candidate indices on the lower convex hull, by bytes
  size_t chosen = 0;         // index into hull reached by the walk
};

struct Step {
  size_t item, to;  // moves item to hull[to] from hull[to - 1]
  double bytes, gain;
};

}  // namespace

CodecPlan plan_codecs(const CodecSensitivity& s, const std::string& name,
                      const std::string& budget_codec, double budget_row_bytes) {
  const size_t C = s.candidates.size();
  SKV_CHECK_GT(C, 0u, "codec plan '", name, "': no candidates were measured");
  SKV_CHECK_EQ(s.row_bytes.size(), C, "codec plan '", name, "': row bytes per candidate");
  SKV_CHECK_EQ(s.keys.size(), s.values.size(), "codec plan '", name, "': layers of K and V");
  const size_t L = s.keys.size();
  SKV_CHECK_GT(L, 0u, "codec plan '", name, "': no layers");
  // Candidates by bytes (then by name, so ties break the same way every time).
  std::vector<size_t> order(C);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return s.row_bytes[a] < s.row_bytes[b]; });
  std::vector<Item> items;
  for (const auto* side : {&s.keys, &s.values}) {
    for (size_t l = 0; l < L; ++l) {
      SKV_CHECK_EQ((*side)[l].size(), C, "codec plan '", name, "': layer ", l, " candidates");
      Item it{&(*side)[l], {}};
      // Lower convex hull of (bytes, KL) over candidates that lower the KL.
      for (size_t c : order) {
        const double x = s.row_bytes[c], y = (*side)[l][c];
        if (!it.hull.empty() && y >= (*side)[l][it.hull.back()]) continue;
        if (!it.hull.empty() && x <= s.row_bytes[it.hull.back()]) it.hull.pop_back();
        while (it.hull.size() >= 2) {
          const size_t a = it.hull[it.hull.size() - 2], b = it.hull.back();
          const double xa = s.row_bytes[a], ya = (*side)[l][a];
          const double xb = s.row_bytes[b], yb = (*side)[l][b];
          // Drop b if it lies on or above the chord a -> (x, y).
          if ((yb - ya) * (x - xa) >= (y - ya) * (xb - xa)) {
            it.hull.pop_back();
          } else {
            break;
          }
        }
        it.hull.push_back(c);
      }
      items.push_back(std::move(it));
    }
  }
  // The cheapest candidate everywhere: each hull starts at it (or at a
  // candidate of the same bytes and lower KL).
  const double budget = budget_row_bytes * static_cast<double>(items.size());
  double spent = s.row_bytes[order[0]] * static_cast<double>(items.size());
  SKV_CHECK(spent <= budget + 1e-9, "codec plan '", name, "': the cheapest candidate '",
            s.candidates[order[0]], "' costs ", s.row_bytes[order[0]], " bytes per row, more than ",
            budget_codec, "'s ", budget_row_bytes);
  std::vector<size_t> chosen;
  std::vector<Step> steps;
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& h = items[i].hull;
    chosen.push_back(h.front());
    for (size_t k = 1; k < h.size(); ++k) {
      steps.push_back({i, k, s.row_bytes[h[k]] - s.row_bytes[h[k - 1]],
                       (*items[i].kl)[h[k - 1]] - (*items[i].kl)[h[k]]});
    }
  }
  std::stable_sort(steps.begin(), steps.end(), [](const Step& a, const Step& b) {
    return a.gain * b.bytes > b.gain * a.bytes;
  });
  for (const Step& st : steps) {
    Item& it = items[st.item];
    if (it.chosen + 1 != st.to || st.bytes > budget - spent + 1e-9) continue;
    it.chosen = st.to;
    chosen[st.item] = it.hull[st.to];
    spent += st.bytes;
  }
  // Then the best single upgrade that fits, while one does.
  for (;;) {
    size_t best_i = SIZE_MAX, best_c = 0;
    double best_gain = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      for (size_t c = 0; c < C; ++c) {
        const double extra = s.row_bytes[c] - s.row_bytes[chosen[i]];
        const double gain = (*items[i].kl)[chosen[i]] - (*items[i].kl)[c];
        if (gain > best_gain && extra <= budget - spent + 1e-9) {
          best_gain = gain;
          best_i = i;
          best_c = c;
        }
      }
    }
    if (best_i == SIZE_MAX) break;
    spent += s.row_bytes[best_c] - s.row_bytes[chosen[best_i]];
    chosen[best_i] = best_c;
  }
  CodecPlan plan;
  plan.name = name;
  plan.budget_codec = budget_codec;
  plan.budget_row_bytes = budget_row_bytes;
  for (size_t i = 0; i < items.size(); ++i) {
    (i < L ? plan.keys : plan.values).push_back(s.candidates[chosen[i]]);
    plan.predicted_kl += (*items[i].kl)[chosen[i]];
  }
  plan.row_bytes = spent / static_cast<double>(items.size());
  return plan;
}

}  // namespace spindlekv
