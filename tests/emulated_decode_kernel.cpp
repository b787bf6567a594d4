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
}  // namespace

const char* emulated_decode_launch(const detail::DecodeLaunch& launch, void* /*stream*/) {
  ++g_launches;
  return detail::dispatch_decode(
      launch, [&](detail::DecodeKernel kernel, dim3 grid, dim3 block) -> const char* {
        simt::run([&] { kernel(launch); }, grid, block);
        return nullptr;
      });
}

const char* emulated_append_launch(const detail::AppendLaunch& launch, void* /*stream*/) {
  ++g_append_launches;
  return detail::dispatch_append(
      launch, [&](detail::AppendKernel kernel, dim3 grid, dim3 block) -> const char* {
        simt::run([&] { kernel(launch); }, grid, block);
        return nullptr;
      });
}

int64_t emulated_decode_launches() { return g_launches; }
int64_t emulated_append_launches() { return g_append_launches; }

}  // namespace spindlekv::testutil
