// Writes a tensor as a NumPy .npy file (format version 1.0), atomically, so
// logits and other arrays can be compared with any other implementation.
#pragma once

#include <ATen/Tensor.h>

#include <string>

namespace spindlekv {

/// Writes `tensor` (float32, float64, int64 or int32; any device, any layout)
/// in C order with a little-endian dtype descriptor.
void write_npy(const std::string& path, const at::Tensor& tensor);

/// Reads a .npy written by write_npy (or NumPy, same dtypes, C order).
at::Tensor read_npy(const std::string& path);

}  // namespace spindlekv
