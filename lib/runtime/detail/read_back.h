// Internal: the runtime's deliberate reads of a device tensor on the host.
// Not installed.
#pragma once

#include <ATen/ATen.h>
#include <ATen/record_function.h>

namespace spindlekv {
namespace detail {

/// `t` on the host: a wait for the device wherever `t` lives there. Recorded
/// as the profiler scope "spindlekv::read_back" on every device, so that a
/// count made on the CPU says what a GPU would wait for in code both take
/// (code that runs only on the host reads back only what is on a device).
/// A copy to the host is not otherwise told apart from other conversions.
/// tests/decode_sync_test.cpp and bench/gpu_bench count it.
inline at::Tensor read_back(const at::Tensor& t) {
  RECORD_USER_SCOPE("spindlekv::read_back");
  return t.to(at::kCPU).contiguous();
}

}  // namespace detail
}  // namespace spindlekv
