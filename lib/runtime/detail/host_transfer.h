// Internal: the runtime's copies between the host and a tensor's device.
// Not installed.
#pragma once

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <vector>

namespace spindlekv {
namespace detail {

/// `t` on the host: a wait for the device wherever `t` lives there. Recorded
/// as the profiler scope "spindlekv::read_back" on every device, so that a
/// count made on the CPU says what a GPU would wait for in code both take
/// (code that runs only on the host reads back only what is on a device).
/// A copy to the host is not otherwise told apart from other conversions.
/// tests/op_counter.h and bench/gpu_bench count it.
inline at::Tensor read_back(const at::Tensor& t) {
  RECORD_USER_SCOPE("spindlekv::read_back");
  return t.to(at::kCPU).contiguous();
}

/// `values` (counts, indices, small tables) as a 1-D `dtype` tensor on
/// `device`, copied without waiting for the device: the host's pageable
/// copy is staged at once, so `values` may go when this returns.
template <typename T>
at::Tensor to_device(const std::vector<T>& values, at::ScalarType dtype,
                     const c10::Device& device) {
  return at::tensor(values, at::TensorOptions().dtype(dtype))
      .to(device, dtype, /*non_blocking=*/true);
}

}  // namespace detail
}  // namespace spindlekv
