// A fingerprint that ties captures, codebooks and artifacts to one model:
// the architecture, every tensor's name, dtype and shape, and a hash of the
// weight bytes. Two directories with the same fingerprint hold the same model.
#pragma once

#include <string>

namespace spindlekv {

struct ModelFingerprint {
  std::string architecture_hash;  ///< 32 hex digits: config fields that shape the KV cache
  std::string tensors_hash;       ///< 32 hex digits: names, dtypes and shapes
  std::string weights_hash;       ///< 32 hex digits: XXH3-128 of all tensor bytes
  /// "arch:tensors:weights", the form stored in files.
  std::string to_string() const;
};

/// Fingerprints the model directory (config.json + safetensors checkpoint).
/// Hashes every weight byte: about a second per GB read from the page cache.
ModelFingerprint fingerprint_model(const std::string& model_dir);

/// XXH3-128 of `bytes` as 32 hex digits (used for calibration text hashes too).
std::string hash_bytes(const std::string& bytes);

/// Incremental XXH3-128 over several buffers.
class StreamingHash {
 public:
  StreamingHash();
  ~StreamingHash();
  StreamingHash(const StreamingHash&) = delete;
  StreamingHash& operator=(const StreamingHash&) = delete;
  void update(const void* data, size_t size);
  void update(const std::string& s) { update(s.data(), s.size()); }
  std::string hex_digest() const;

 private:
  void* state_;
};

}  // namespace spindlekv
