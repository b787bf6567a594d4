// A validating, memory-mapped reader for the safetensors format.
//
// Format: an 8-byte little-endian header length N, N bytes of JSON mapping
// tensor names to {dtype, shape, data_offsets} (plus an optional
// "__metadata__" string map), then the tensor bytes. Everything that can be
// wrong with a downloaded file is checked when it is opened, so that a
// corrupt or truncated checkpoint fails with the file and tensor named
// instead of crashing or yielding a silently zeroed tensor:
// header length, JSON syntax, dtype names, shape x dtype = byte span,
// offsets inside the file, no overlaps and no holes.
//
// Tensors come back as CPU at::Tensor copies in their stored dtype (the
// mapping is read-only and may be unaligned).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace spindlekv {

/// Element types safetensors can name (the subset SpindleKV reads and writes).
enum class SafetensorsDType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

/// Size in bytes of one element.
std::size_t dtype_size(SafetensorsDType dtype);
/// The format's name for a dtype ("F32", "BF16", ...).
const char* dtype_name(SafetensorsDType dtype);

/// Where one tensor lives in the file.
struct SafetensorsTensorInfo {
  std::string name;
  SafetensorsDType dtype = SafetensorsDType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  ///< byte offset from the start of the data section
  uint64_t end = 0;    ///< one past the last byte
};

class SafetensorsReader {
 public:
  /// Maps `path` and validates the header; throws spindlekv::Error naming the
  /// file (and the tensor, where one is at fault).
  explicit SafetensorsReader(const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const;
  /// Names of all tensors, sorted.
  std::vector<std::string> tensor_names() const;
  bool contains(const std::string& name) const;
  /// Throws kInvalidInput naming the file if `name` is absent.
  const SafetensorsTensorInfo& info(const std::string& name) const;
  /// A CPU copy of the tensor in its stored dtype.
  at::Tensor tensor(const std::string& name) const;
  /// The "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const;
  /// The raw bytes of the data section and its size (for checksums).
  const uint8_t* data_section() const;
  uint64_t data_section_size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace spindlekv
