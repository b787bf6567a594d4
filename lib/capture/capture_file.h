// The capture file: pre-RoPE keys, values and attention statistics of a model
// on calibration text, in plain HDF5 (h5py reads it without this project).
// Schema: docs/capture_format.md. Version 1.
//
// Tensor shapes, float32 unless said otherwise:
//   keys, values  [vectors, kv_heads, head_dim]
//   positions, token_ids, sequence_ids  [vectors] int64
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "capture/attention_statistics.h"

namespace spindlekv {

constexpr const char* kCaptureFormat = "spindlekv-capture";
constexpr int64_t kCaptureFormatVersion = 1;

/// File-level attributes of a capture.
struct CaptureMetadata {
  std::string tool_version;
  std::string model_dir;
  std::string model_fingerprint;         ///< ModelFingerprint::to_string()
  std::string model_config_json;         ///< the model's config.json as parsed
  std::string tokenizer;                 ///< "byte", "sentencepiece", "bpe"
  std::string calibration_sources_json;  ///< JSON list of the text files
  std::string calibration_hash;          ///< TextSource::content_hash()
  std::string options_json = "{}";       ///< every CaptureOptions field (capture_options_json)
  std::string dtype = "float32";         ///< of keys and values
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double rope_theta = 0;
  std::string rope_scaling;            ///< "none", "linear", "llama3"
  int64_t seq_len = 0;                 ///< tokens per sequence
  int64_t window = 0;                  ///< observation window of the attention statistics
  int64_t positions_per_sequence = 0;  ///< vectors kept per sequence and layer (0 = all)
  uint64_t seed = 0;                   ///< of position sampling
  std::vector<int64_t> layers;         ///< captured layers
  std::vector<double> keep_fractions;  ///< x axis of retained_mass
  int64_t sink_tokens = 0;
  double key_threshold = 0;
  double value_threshold = 0;
  int compression_level = 0;  ///< deflate level of key/value datasets (0: none); not stored
};

/// One sequence's data for one captured layer.
struct LayerSequenceData {
  at::Tensor keys;       ///< [n, kv_heads, head_dim] pre-RoPE
  at::Tensor values;     ///< [n, kv_heads, head_dim]
  at::Tensor positions;  ///< [n] int64
  at::Tensor token_ids;  ///< [n] int64
  LayerAttentionStatistics stats;
};

/// Appends sequences to a capture file. Rows become durable at flush(): a
/// file interrupted later reopens (resume) with exactly the flushed sequences.
class CaptureWriter {
 public:
  /// Creates `path`; throws kIo if it exists or cannot be created.
  static std::unique_ptr<CaptureWriter> create(const std::string& path,
                                               const CaptureMetadata& meta);
  /// Reopens an interrupted capture for appending. Throws naming the
  /// attribute if `expected` disagrees with the file (another model, text,
  /// sequence length or layers), and drops rows written after the last flush.
  static std::unique_ptr<CaptureWriter> resume(const std::string& path,
                                               const CaptureMetadata& expected);
  ~CaptureWriter();

  /// Sequences made durable by flush().
  int64_t complete_sequences() const;
  /// Appends one sequence; `per_layer` follows metadata.layers.
  void append_sequence(int64_t sequence_id, const std::vector<LayerSequenceData>& per_layer);
  /// Writes everything appended so far to disk and records it as complete.
  void flush();
  /// Flushes, marks the capture finished and closes the file.
  void finish();

 private:
  struct Impl;
  explicit CaptureWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Reads a capture file (complete or interrupted).
class CaptureReader {
 public:
  /// Opens and checks the format name and version; throws naming the file.
  explicit CaptureReader(const std::string& path);
  ~CaptureReader();

  const CaptureMetadata& metadata() const;
  int64_t complete_sequences() const;
  bool finished() const;
  /// Number of captured vectors of `layer` (a captured layer index).
  int64_t vector_count(int64_t layer) const;
  /// Rows [start, start + count) of keys or values: [count, kv_heads, head_dim].
  at::Tensor read_keys(int64_t layer, int64_t start, int64_t count) const;
  at::Tensor read_values(int64_t layer, int64_t start, int64_t count) const;
  /// positions, token_ids or sequence_ids of `layer`: [vectors] int64.
  at::Tensor read_index(int64_t layer, const std::string& name) const;
  /// A statistics dataset of `layer` as float64: retained_mass [S, heads, F],
  /// sink_mass / entropy_bits / fraction_for_90_percent [S, heads],
  /// key_pair_fraction / value_pair_fraction [S, kv_heads].
  at::Tensor read_statistic(int64_t layer, const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace spindlekv
