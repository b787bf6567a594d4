// The SpindleKV artifact: everything the runtime needs from calibration, in
// one safetensors file bound to one model. Written by `spindlekv export`,
// read by the runtime library. Format: docs/artifact_format.md, version 1.
//
// Tensors (any safetensors reader can load them):
//   layers.<L>.keys.codebook    [groups, K, head_dim] float32, unit rows
//   layers.<L>.keys.sizes       [groups] int64: entries in use (rows past it are zero)
//   layers.<L>.values.codebook, layers.<L>.values.sizes    (the same for values)
//   coverage.keys, coverage.values  [layers, groups] float64: held-out coverage
//   budgets.context_ratios      [R] float64
//   budgets.pyramid, budgets.calibrated  [R, layers] float64: context keep fractions
// groups = kv_heads for per-head codebooks, 1 for a codebook shared by a layer's heads.
//
// Metadata (string map): format, format_version, tool_version,
// model_fingerprint, geometry (JSON), key_threshold, value_threshold, window,
// gqa_mode, sharing, pyramid_beta, sources (JSON), checksum (XXH3-128 over
// every other metadata entry and every tensor's name, dtype, shape and bytes).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/layer_budgets.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {

struct ModelConfig;

constexpr const char* kArtifactFormat = "spindlekv-artifact";
constexpr int64_t kArtifactFormatVersion = 1;

/// One layer's calibrated codebooks.
struct ArtifactLayer {
  at::Tensor key_codebook;             ///< [groups, K, head_dim] float32
  at::Tensor value_codebook;           ///< [groups, K, head_dim] float32
  std::vector<int64_t> key_sizes;      ///< entries in use, per group
  std::vector<int64_t> value_sizes;    ///< entries in use, per group
  std::vector<double> key_coverage;    ///< held-out coverage, per group
  std::vector<double> value_coverage;  ///< held-out coverage, per group
};

struct Artifact {
  std::string tool_version;
  std::string model_fingerprint;  ///< ModelFingerprint::to_string() of the calibrated model
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double key_threshold = paper::kKeyThreshold;      ///< theta_K used in training and at runtime
  double value_threshold = paper::kValueThreshold;  ///< theta_V
  int64_t window = paper::kWindow;   ///< observation window the budgets were calibrated for
  std::string gqa_mode = "repeat";   ///< "repeat" (the paper) or "average"
  std::string sharing = "per-head";  ///< "per-head" or "shared"
  double pyramid_beta = paper::kPyramidBeta;
  std::string sources_json = "{}";  ///< the codebook and capture files it came from
  std::string checksum;             ///< set by load_artifact and save_artifact
  std::vector<ArtifactLayer> layers;
  BudgetTable pyramid;     ///< the paper's linear pyramid, tabulated
  BudgetTable calibrated;  ///< from the capture statistics (see budget_calibrator.h)

  /// Throws kInvalidInput naming the field if shapes, sizes or values disagree.
  void validate() const;
  /// Throws kInvalidInput, saying which, unless `fingerprint` is this
  /// artifact's model (ModelFingerprint::to_string() form).
  void check_model_fingerprint(const std::string& fingerprint) const;
  /// Throws kInvalidInput naming the field unless `config`'s layers, heads,
  /// KV heads and head_dim are the artifact's.
  void check_model_config(const ModelConfig& config) const;
};

/// Writes atomically (temporary file, then rename), with the checksum.
void save_artifact(const std::string& path, Artifact& artifact);

/// Reads and verifies format, version (a newer one is refused with
/// kUnsupported), checksum and shapes; throws naming the file and the field.
Artifact load_artifact(const std::string& path);

/// load_artifact() plus check_model_fingerprint(expected_fingerprint).
Artifact load_artifact_for_model(const std::string& path, const std::string& expected_fingerprint);

}  // namespace spindlekv
