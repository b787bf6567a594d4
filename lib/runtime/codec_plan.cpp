#include "runtime/codec_plan.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "runtime/row_codec.h"

namespace spindlekv {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CodecPlan, name, budget_codec, keys, values, predicted_kl,
                                   row_bytes, budget_row_bytes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CodecSensitivity, candidates, row_bytes, keys, values, samples,
                                   context, continuation)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CodecPlans, sensitivity, plans)

const CodecPlan& CodecPlans::at(const std::string& name) const {
  std::string known;
  for (const CodecPlan& p : plans) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  SKV_THROW(kInvalidInput, "the artifact has no codec plan '", name,
            "' (it has: ", known.empty() ? "none; export it with --plan-bits" : known, ")");
}

void CodecPlans::validate(int64_t num_layers) const {
  std::set<std::string> names;
  for (const CodecPlan& p : plans) {
    SKV_CHECK(p.name.size() > 4 && p.name.compare(0, 4, "plan") == 0, "codec plan name '", p.name,
              "' must be 'plan' and a suffix");
    SKV_CHECK(names.insert(p.name).second, "codec plan '", p.name, "' is given twice");
    for (const auto* side : {&p.keys, &p.values}) {
      const char* what = side == &p.keys ? "keys" : "values";
      SKV_CHECK_EQ(static_cast<int64_t>(side->size()), num_layers, "codec plan '", p.name, "' ",
                   what, ": layers");
      for (size_t l = 0; l < side->size(); ++l) {
        const std::string& c = (*side)[l];
        with_context("codec plan '" + p.name + "' " + what + " of layer " + std::to_string(l), [&] {
          const auto codec = parse_row_codec(c);
          SKV_CHECK(!codec || !codec->needs_artifact(), "codec '", c,
                    "' needs an artifact itself; a plan names plain codecs");
        });
      }
    }
  }
  const CodecSensitivity& s = sensitivity;
  if (s.empty()) return;
  SKV_CHECK_EQ(s.row_bytes.size(), s.candidates.size(), "codec sensitivity: row_bytes");
  for (const auto* side : {&s.keys, &s.values}) {
    SKV_CHECK_EQ(static_cast<int64_t>(side->size()), num_layers, "codec sensitivity: layers");
    for (size_t l = 0; l < side->size(); ++l) {
      SKV_CHECK_EQ((*side)[l].size(), s.candidates.size(), "codec sensitivity: layer ", l,
                   " candidates");
      for (double v : (*side)[l]) {
        SKV_CHECK(std::isfinite(v) && v >= 0, "codec sensitivity: layer ", l, " holds ", v,
                  " (must be finite and >= 0)");
      }
    }
  }
}

std::string codec_plans_to_json(const CodecPlans& plans) { return nlohmann::json(plans).dump(); }

CodecPlans codec_plans_from_json(const std::string& text) {
  try {
    return nlohmann::json::parse(text).get<CodecPlans>();
  } catch (const nlohmann::json::exception& e) {
    SKV_THROW(kInvalidInput, "metadata 'codec_plans': ", e.what());
  }
}

}  // namespace spindlekv
