// The fused decode kernels of decode_kernels.cuh on a GPU: queued with
// cudaLaunchKernel on the caller's stream, plus what the host side
// (decode_attention.cpp) asks of the device. Compiled by nvcc without ATen.
#include <cuda_runtime.h>

#include "runtime/detail/decode_kernels.cuh"
#include "runtime/detail/decode_launch.h"

namespace spindlekv {
namespace detail {

int decode_multiprocessors(int device) {
  int count = 0;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    return 1;
  return count;
}

bool decode_kernel_runs_here() {
  cudaFuncAttributes attributes;
  const bool runs = cudaFuncGetAttributes(&attributes, decode_merge) == cudaSuccess;
  if (!runs) (void)cudaGetLastError();  // leave no error for the next launch to report
  return runs;
}

namespace {

// A dispatcher's launch function queuing a kernel that takes `launch` by
// value on `stream`. cudaLaunchKernel copies the arguments when it queues.
template <class Launch>
auto on_stream(const Launch& launch, void* stream) {
  return [&launch, stream](void (*kernel)(Launch), dim3 grid, dim3 block) -> const char* {
    void* args[] = {const_cast<Launch*>(&launch)};
    const cudaError_t e = cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block,
                                           args, 0, static_cast<cudaStream_t>(stream));
    return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
  };
}

}  // namespace

const char* launch_decode_attention(const DecodeLaunch& L, void* stream) {
  return dispatch_decode(L, on_stream(L, stream));
}

const char* launch_decode_append(const AppendLaunch& L, void* stream) {
  return dispatch_append(L, on_stream(L, stream));
}

}  // namespace detail
}  // namespace spindlekv
