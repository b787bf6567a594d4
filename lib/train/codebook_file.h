// The codebook file: per-layer key and value codebooks learned by
// `spindlekv train`, with their support, held-out coverage and coverage
// curves, bound to the capture (and so the model) they were learned from.
// Plain HDF5; schema in docs/codebook_format.md. Version 1.
//
// Shapes: codebooks [groups, K, head_dim] float32 with unit rows (groups =
// kv_heads when trained per head, 1 when shared across a layer's heads; rows
// past a group's size are zero); support [groups, K] int64.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/paper_defaults.h"

namespace spindlekv {

constexpr const char* kCodebookFormat = "spindlekv-codebooks";
constexpr int64_t kCodebookFormatVersion = 1;

struct CodebookFileMetadata {
  std::string tool_version;
  std::string capture_file;
  std::string model_fingerprint;  ///< from the capture
  std::string calibration_hash;   ///< from the capture
  std::string config_json;        ///< the training options
  std::string sharing;            ///< "per-head" or "shared"
  double key_threshold = paper::kKeyThreshold;
  double value_threshold = paper::kValueThreshold;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  std::vector<int64_t> curve_sizes;  ///< x axis of the coverage curves
  uint64_t seed = 0;
};

/// Keys or values of one layer.
struct CodebookSet {
  at::Tensor codewords;                            ///< [groups, K, head_dim]
  at::Tensor support;                              ///< [groups, K] int64
  std::vector<int64_t> sizes;                      ///< codewords in use per group
  std::vector<double> train_coverage;              ///< per group
  std::vector<double> heldout_coverage;            ///< per group, at its size
  std::vector<std::vector<double>> heldout_curve;  ///< per group, over curve_sizes
};

struct LayerCodebooks {
  int64_t layer = 0;
  CodebookSet keys;
  CodebookSet values;
};

struct CodebookFile {
  CodebookFileMetadata metadata;
  std::vector<LayerCodebooks> layers;
  /// The entry of `layer`; throws naming the layers present if absent.
  const LayerCodebooks& layer(int64_t layer) const;
};

/// Writes atomically (temporary file, then rename).
void write_codebook_file(const std::string& path, const CodebookFile& file);
/// Reads and validates format, version, shapes and unit rows.
CodebookFile read_codebook_file(const std::string& path);

}  // namespace spindlekv
