// A CPU emulation of CUDA's execution model, enough to run kernel source
// written for nvcc (runtime/detail/decode_kernels.cuh) in CI, which has no
// GPU: every thread of a block is a fiber (POSIX ucontext) on the calling
// thread, blocks run one after another, and __syncthreads and
// __shfl_xor_sync are barriers among the fibers they name. A barrier that
// can never be passed (a thread that skips one its peers wait at) is a
// deadlock, reported by throwing. __shared__ arrays are static: one block at
// a time uses them. Include before the kernel source, in one translation
// unit of a test; it defines CUDA's keywords as macros.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <functional>

namespace spindlekv::simt {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
  Dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  unsigned count() const { return x * y * z; }
};

/// The running thread's index, block, and the launch's shape.
const Dim3& thread_index();
const Dim3& block_index();
const Dim3& block_dim();
const Dim3& grid_dim();

/// __syncthreads at source line `site`: waits for every thread of the
/// block. Throws when threads meet at different call sites (a barrier in
/// code the block does not take uniformly: undefined on a GPU).
void sync_threads(int site);

/// __shfl_xor_sync: `value` of lane (this lane ^ lane_mask) among the lanes
/// of this warp set in `mask`, each of which must make the same call.
/// Throws when that lane is not in `mask` or this lane is not.
float shuffle_xor(unsigned mask, float value, int lane_mask);

/// Runs `body` as every thread of every block of `grid` x `block`
/// (at most 1024 threads per block); returns when all have finished.
/// Throws on a deadlock. Not reentrant.
void run(const std::function<void()>& body, Dim3 grid, Dim3 block);

/// Fibers switched so far (a measure of the emulation's work).
int64_t switches();

}  // namespace spindlekv::simt

// CUDA's vocabulary, on the CPU.
using dim3 = spindlekv::simt::Dim3;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(threads)
#define __shared__ static
#define threadIdx (::spindlekv::simt::thread_index())
#define blockIdx (::spindlekv::simt::block_index())
#define blockDim (::spindlekv::simt::block_dim())
#define gridDim (::spindlekv::simt::grid_dim())

using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;
inline float __half2float(__half x) { return static_cast<float>(x); }
inline float __bfloat162float(__nv_bfloat16 x) { return static_cast<float>(x); }
inline __half __float2half_rn(float x) { return __half(x); }  // c10: round to nearest even
inline __nv_bfloat16 __float2bfloat16_rn(float x) { return __nv_bfloat16(x); }
inline float __expf(float x) { return std::exp(x); }
#define __syncthreads() ::spindlekv::simt::sync_threads(__LINE__)
inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask) {
  return spindlekv::simt::shuffle_xor(mask, value, lane_mask);
}
