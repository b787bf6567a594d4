// A calibrated byte plan: which row codec (runtime/row_codec.h) codes each
// layer's keys and each layer's values, chosen offline by `spindlekv export`
// from the error each choice causes on calibration text, within the bytes of
// one uniform codec. The artifact holds the plans and the sensitivities they
// were chosen from; the row codec "plan<suffix>" (runtime/codecs/
// plan_codec.cpp) binds a layer to the codec its plan names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spindlekv {

/// One plan: a row codec name (or "none": rows in the storage dtype) per
/// layer and side.
struct CodecPlan {
  /// The codec name that selects it: "plan" and a suffix ("plan2.5").
  std::string name;
  /// The uniform codec whose bytes it was planned within ("tq2.5").
  std::string budget_codec;
  std::vector<std::string> keys;    ///< per layer
  std::vector<std::string> values;  ///< per layer
  /// Sum over layers and sides of the chosen codecs' measured sensitivity.
  double predicted_kl = 0;
  /// Mean coded bytes per row over layers and sides, and the budget's.
  double row_bytes = 0, budget_row_bytes = 0;
};

/// What the plans were chosen from: per layer, side and candidate codec, the
/// mean KL(full || coded) of next-token distributions over a calibration
/// continuation when only that layer's side is coded with the candidate.
struct CodecSensitivity {
  std::vector<std::string> candidates;            ///< row codec names measured
  std::vector<double> row_bytes;                  ///< coded bytes per row, per candidate
  std::vector<std::vector<double>> keys, values;  ///< [layer][candidate] KL in nats per token
  int64_t samples = 0;                            ///< calibration contexts averaged
  int64_t context = 0, continuation = 0;          ///< tokens per context, tokens scored

  bool empty() const { return candidates.empty(); }
};

/// The plans of an artifact and their sensitivities (both empty when it has none).
struct CodecPlans {
  CodecSensitivity sensitivity;
  std::vector<CodecPlan> plans;

  /// The plan named `name`; throws kInvalidInput listing the plans there are.
  const CodecPlan& at(const std::string& name) const;
  /// Throws kInvalidInput naming the plan, layer and value unless every
  /// plan has `num_layers` entries per side, each "none" or a row codec that
  /// needs no artifact, names are unique "plan..." names, and the
  /// sensitivity table is [num_layers][candidates] of finite values >= 0.
  void validate(int64_t num_layers) const;
};

/// The one serialised form of CodecPlans (the artifact's "codec_plans"
/// metadata, a JSON object), written and read by the artifact.
std::string codec_plans_to_json(const CodecPlans& plans);
/// Throws kInvalidInput naming the key at fault.
CodecPlans codec_plans_from_json(const std::string& json);

}  // namespace spindlekv
