// Writes tensors in the safetensors format, atomically (temporary file, then
// rename), so any safetensors reader (Python's included) can load them.
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace spindlekv {

/// Writes `tensors` (name, tensor) to `path`. Tensors may live on any device and
/// be non-contiguous; they are copied to contiguous CPU memory. Supported dtypes:
/// float64/32/16, bfloat16, int64/32/16/8, uint8, bool. Names must be unique and
/// not "__metadata__". `metadata` becomes the header's "__metadata__" map.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace spindlekv
