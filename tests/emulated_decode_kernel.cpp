// The kernels' own source, compiled for the CPU: simt.h first, so that
// decode_kernels.cuh sees CUDA's vocabulary.
#include "emulated_decode_kernel.h"

#include "simt.h"
// The kernel source after the emulation it needs.
#include "runtime/detail/decode_kernels.cuh"
#include "runtime/detail/decode_launch.h"

namespace spindlekv::testutil {
namespace {

int64_t g_launches = 0, g_append_launches = 0;

// A dispatcher's launch function running a kernel that takes `launch` by
// value to completion under the emulation.
template <class Launch>
auto emulated(const Launch& launch) {
  return [&launch](void (*kernel)(Launch), dim3 grid, dim3 block) -> const char* {
    simt::run([&] { kernel(launch); }, grid, block);
    return nullptr;
  };
}

}  // namespace

const char* emulated_decode_launch(const detail::DecodeLaunch& launch, void* /*stream*/) {
  ++g_launches;
  return detail::dispatch_decode(launch, emulated(launch));
}

const char* emulated_append_launch(const detail::AppendLaunch& launch, void* /*stream*/) {
  ++g_append_launches;
  return detail::dispatch_append(launch, emulated(launch));
}

int64_t emulated_decode_launches() { return g_launches; }
int64_t emulated_append_launches() { return g_append_launches; }

}  // namespace spindlekv::testutil
