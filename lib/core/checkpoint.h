// The tensors of a Hugging Face checkpoint directory: one model.safetensors,
// or shards listed by model.safetensors.index.json.
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace spindlekv {

class SafetensorsReader;

class Checkpoint {
 public:
  /// Opens and validates every file the checkpoint consists of; throws
  /// spindlekv::Error naming the directory, the file and the tensor at fault.
  explicit Checkpoint(const std::string& model_dir);
  ~Checkpoint();

  const std::string& directory() const { return dir_; }
  /// All tensor names, sorted.
  std::vector<std::string> tensor_names() const;
  bool contains(const std::string& name) const;
  /// The tensor converted to float32 (CPU). Throws naming the tensor if absent.
  at::Tensor get_float(const std::string& name) const;
  /// Checks `name` exists with exactly `shape`; throws naming both shapes.
  at::Tensor get_float(const std::string& name, const std::vector<int64_t>& shape) const;
  /// Stored dtype name of a tensor ("BF16", ...).
  std::string dtype_name(const std::string& name) const;
  /// Shape of a tensor as stored.
  std::vector<int64_t> shape(const std::string& name) const;
  /// The checkpoint's files (basename -> reader), for fingerprinting.
  std::vector<const SafetensorsReader*> files() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsReader>> readers_;
  std::map<std::string, const SafetensorsReader*> where_;
};

}  // namespace spindlekv
