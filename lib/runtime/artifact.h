// The SpindleKV artifact: everything the runtime needs from calibration, in
// one safetensors file bound to one model. Written by `spindlekv export`,
// read by the runtime library. Its layout (every tensor and metadata key) is
// kArtifactTensors and kArtifactMetadata below, which save, load and inspect
// use; docs/artifact_format.md documents the same tables (a test checks).
// Version 1. groups = kv_heads for per-head codebooks, 1 for a codebook
// shared by a layer's heads.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/cache_geometry.h"
#include "runtime/codec_plan.h"
#include "runtime/layer_budgets.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {

constexpr const char* kArtifactFormat = "spindlekv-artifact";
constexpr int64_t kArtifactFormatVersion = 1;

/// One entry of the artifact's layout: a tensor name ("<L>" stands for each
/// layer index) or metadata key, and what it holds.
struct ArtifactEntry {
  const char* name;
  const char* meaning;
  bool optional = false;  ///< what older artifacts lack (metadata: its default is taken)
};

/// Every tensor of an artifact, once.
constexpr ArtifactEntry kArtifactTensors[] = {
    {"layers.<L>.keys.codebook", "[groups, K, head_dim] float32: key entries, unit rows"},
    {"layers.<L>.keys.sizes", "[groups] int64: key entries in use (rows past it are zero)"},
    {"layers.<L>.values.codebook", "[groups, K, head_dim] float32: value entries, unit rows"},
    {"layers.<L>.values.sizes", "[groups] int64: value entries in use"},
    {"coverage.keys", "[layers, groups] float64: held-out coverage of the key codebooks"},
    {"coverage.values", "[layers, groups] float64: held-out coverage of the value codebooks"},
    {"budgets.context_ratios", "[R] float64: context ratios r_c of the budget tables"},
    {"budgets.pyramid", "[R, layers] float64: the paper's pyramid, context kept per layer"},
    {"budgets.calibrated", "[R, layers] float64: the calibrated allocation"},
    {"fp8.key_scales",
     "[layers, kv_heads] float32: fp8 scales of pre-RoPE keys, max |x| / 448 over the capture",
     true},
    {"fp8.value_scales", "[layers, kv_heads] float32: fp8 scales of values", true},
};

/// Every metadata key of an artifact (all strings), once.
constexpr ArtifactEntry kArtifactMetadata[] = {
    {"format", "spindlekv-artifact"},
    {"format_version", "1"},
    {"tool_version", "SpindleKV version that wrote it"},
    {"model_fingerprint", "ModelFingerprint::to_string() of the calibrated model"},
    {"geometry", "JSON: num_layers, num_heads, num_kv_heads, head_dim"},
    {"key_threshold", "theta_K the key codebooks were trained for"},
    {"value_threshold", "theta_V the value codebooks were trained for"},
    {"window", "observation window l_w of the capture statistics"},
    {"gqa_mode", "repeat or average"},
    {"sharing", "per-head or shared"},
    {"pyramid_beta", "smallest per-layer ratio of the pyramid"},
    {"storage_dtype", "cache storage dtype the budgets were planned in (float32 when absent)",
     true},
    {"codec_plans",
     "JSON (runtime/codec_plan.h): calibrated codec plans per layer and side, and the "
     "sensitivities they were chosen from; absent when none was planned",
     true},
    {"sources", "JSON: codebook and capture files, calibration text hash, export options"},
    {"checksum", "XXH3-128 over every other metadata entry and every tensor"},
};

/// The tensor names of an artifact of `num_layers` layers: kArtifactTensors
/// with "<L>" expanded, in table order; the optional ones only if asked.
std::vector<std::string> artifact_tensor_names(int64_t num_layers, bool with_optional = true);

/// One layer's calibrated codebooks.
struct ArtifactLayer {
  at::Tensor key_codebook;             ///< [groups, K, head_dim] float32
  at::Tensor value_codebook;           ///< [groups, K, head_dim] float32
  std::vector<int64_t> key_sizes;      ///< entries in use, per group
  std::vector<int64_t> value_sizes;    ///< entries in use, per group
  std::vector<double> key_coverage;    ///< held-out coverage, per group
  std::vector<double> value_coverage;  ///< held-out coverage, per group
  /// fp8 scales per KV head ([kv_heads] float32), for fp8 caches with
  /// calibrated scales; undefined when the artifact has none.
  at::Tensor fp8_key_scale, fp8_value_scale;
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
  /// The cache storage dtype (float32, float16, bfloat16) whose bytes the
  /// calibrated budgets were planned in (runtime/storage_cost.h).
  std::string storage_dtype = "float32";
  std::string sources_json = "{}";  ///< the codebook and capture files it came from
  std::string checksum;             ///< set by load_artifact and save_artifact
  std::vector<ArtifactLayer> layers;
  BudgetTable pyramid;     ///< the paper's linear pyramid, tabulated
  BudgetTable calibrated;  ///< from the capture statistics (see budget_calibrator.h)
  /// Calibrated codec plans (the row codecs "plan<suffix>"); empty when none.
  CodecPlans codec_plans;

  /// Throws kInvalidInput naming the field if shapes, sizes or values disagree.
  void validate() const;
  /// Throws kInvalidInput, saying which, unless `fingerprint` is this
  /// artifact's model (ModelFingerprint::to_string() form).
  void check_model_fingerprint(const std::string& fingerprint) const;
  /// Throws kInvalidInput naming the field unless the geometry's layers,
  /// heads, KV heads and head_dim are the artifact's.
  void check_geometry(const CacheGeometry& geometry) const;
};

/// Writes atomically (temporary file, then rename), with the checksum.
void save_artifact(const std::string& path, Artifact& artifact);

/// Reads and verifies format, version (a newer one is refused with
/// kUnsupported), checksum and shapes; throws naming the file and the field.
Artifact load_artifact(const std::string& path);

/// load_artifact() plus check_model_fingerprint(expected_fingerprint).
Artifact load_artifact_for_model(const std::string& path, const std::string& expected_fingerprint);

}  // namespace spindlekv
