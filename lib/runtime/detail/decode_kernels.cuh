// The fused decode kernels (issue #16), in the manner of FlashDecoding: one
// block per (split of the slots, KV head, sequence) reads each slot's code,
// magnitude and position, gathers its key row (calibrated entry,
// just-in-time entry or exact row: the tables are small and stay in L2),
// rotates it by RoPE at the slot's position, scores it against the group's
// queries, and folds the gathered value row into an online softmax; a second
// kernel merges the splits. One new token per sequence. A third kernel,
// decode_append, codes each sequence's new K/V into its tables before the
// attention (one block per KV head, sequence and side). The ATen path of
// compressed_cache.cpp and compressed_storage.cpp is the reference.
//
// Device code only, and only CUDA's vocabulary: decode_kernel.cu compiles it
// with nvcc; tests/simt.h defines that vocabulary on the CPU so that
// tests/fused_decode_emulated_test.cpp runs this same source in CI, which
// has no GPU.
// Include it in one translation unit per binary (its kernels have internal
// linkage). Not installed.
#pragma once

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#include <cmath>
#include <cstdint>

#include "runtime/detail/decode_launch.h"

namespace spindlekv {
namespace detail {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxG = kDecodeMaxGroup;

__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

// Row `slot` of KV head g of one side, times its magnitude, the P pairs of
// this lane: x[i] = dim lane * P + i, x[P + i] = that dim + D / 2. False
// (and zeros) for a zero code.
template <int D, int P, typename TE, typename TM>
__device__ __forceinline__ bool load_row(const DecodeSide& s, const DecodeTable& t, int g,
                                         int64_t slot, int lane, float (&x)[2 * P]) {
  int64_t code;
  bool zero;
  if (s.code_bytes == 2) {
    const int16_t c = static_cast<const int16_t*>(s.code)[g * s.code_stride + slot];
    code = c;
    zero = c == INT16_MAX;
  } else {
    const int32_t c = static_cast<const int32_t*>(s.code)[g * s.code_stride + slot];
    code = c;
    zero = c == INT32_MAX;
  }
  const TE* row = nullptr;
  if (!zero) {
    if (code >= 0 && code < t.capacity) {
      row = static_cast<const TE*>(t.rows) + ((t.shared ? 0 : g) * t.capacity + code) * D;
    } else if (code >= t.capacity && code < t.capacity + s.jit_capacity) {
      row = static_cast<const TE*>(s.jit) + (g * s.jit_capacity + code - t.capacity) * D;
    } else if (code < 0 && -code - 1 < s.exact_capacity) {
      row = static_cast<const TE*>(s.exact) + (g * s.exact_capacity + (-code - 1)) * D;
    }
  }
  if (row == nullptr) {
#pragma unroll
    for (int i = 0; i < 2 * P; ++i) x[i] = 0.f;
    return false;
  }
  const float mag = widen(static_cast<const TM*>(s.magnitude)[g * s.magnitude_stride + slot]);
#pragma unroll
  for (int i = 0; i < P; ++i) {
    x[i] = widen(row[lane * P + i]) * mag;
    x[P + i] = widen(row[D / 2 + lane * P + i]) * mag;
  }
  return true;
}

template <int D, typename TE, typename TM>
__global__ void __launch_bounds__(kThreads) decode_partial(const DecodeLaunch L) {
  constexpr int LANES = D / 2 < 32 ? D / 2 : 32;  // lanes per slot
  constexpr int P = D / 2 / LANES;                // pairs per lane
  constexpr int VG = kThreads / LANES;            // slots in flight per block
  __shared__ float s_m[VG][kMaxG], s_l[VG][kMaxG];
  __shared__ float s_acc[VG][kMaxG][D];

  const int split = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const DecodeSequence& S = L.seq[b];
  const int group = L.heads / L.kv_heads;
  const int lane = threadIdx.x % LANES, vg = threadIdx.x / LANES;
  const unsigned mask =
      LANES == 32 ? 0xffffffffu : (((1u << LANES) - 1u) << ((threadIdx.x % 32) / LANES * LANES));
  const int64_t n = S.slots;
  const int64_t per = (n + L.splits - 1) / L.splits;
  const int64_t begin = split * per;
  const int64_t end = begin + per < n ? begin + per : n;
  const int64_t qpos = L.query_positions[b];

  float q[kMaxG][2 * P], acc[kMaxG][2 * P], m[kMaxG], l[kMaxG];
#pragma unroll
  for (int h = 0; h < kMaxG; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int i = 0; i < P; ++i) {
      const float* qh = L.queries + (static_cast<int64_t>(b) * L.heads + g * group + h) * D;
      const bool in = h < group;
      q[h][i] = in ? qh[lane * P + i] * L.scale : 0.f;
      q[h][P + i] = in ? qh[D / 2 + lane * P + i] * L.scale : 0.f;
      acc[h][i] = acc[h][P + i] = 0.f;
    }
  }

  for (int64_t s = begin + vg; s < end; s += VG) {
    const int32_t kp = S.positions[g * S.positions_stride + s];
    if (kp < 0 || kp > qpos || (L.sliding_window > 0 && kp <= qpos - L.sliding_window)) continue;
    float k[2 * P], v[2 * P];
    if (load_row<D, P, TE, TM>(S.keys, L.key_table, g, s, lane, k)) {
      const float* c = L.cos + static_cast<int64_t>(kp) * D;
      const float* sn = L.sin + static_cast<int64_t>(kp) * D;
#pragma unroll
      for (int i = 0; i < P; ++i) {
        const int j = lane * P + i;
        const float a = k[i], bb = k[P + i];
        k[i] = a * c[j] - bb * sn[j];
        k[P + i] = bb * c[j + D / 2] + a * sn[j + D / 2];
      }
    }
    load_row<D, P, TE, TM>(S.values, L.value_table, g, s, lane, v);
#pragma unroll
    for (int h = 0; h < kMaxG; ++h) {
      if (h >= group) break;
      float dot = 0.f;
#pragma unroll
      for (int i = 0; i < 2 * P; ++i) dot += q[h][i] * k[i];
#pragma unroll
      for (int off = LANES / 2; off > 0; off /= 2) dot += __shfl_xor_sync(mask, dot, off);
      if (S.member != nullptr && !S.member[(g * group + h) * S.member_stride + s]) continue;
      const float mn = fmaxf(m[h], dot);
      const float corr = __expf(m[h] - mn);  // 0 while m is -inf
      const float p = __expf(dot - mn);
      l[h] = l[h] * corr + p;
#pragma unroll
      for (int i = 0; i < 2 * P; ++i) acc[h][i] = acc[h][i] * corr + p * v[i];
      m[h] = mn;
    }
  }

  // Merge the block's slots in flight, then write the split's partial.
#pragma unroll
  for (int h = 0; h < kMaxG; ++h) {
    if (h >= group) break;
    if (lane == 0) {
      s_m[vg][h] = m[h];
      s_l[vg][h] = l[h];
    }
#pragma unroll
    for (int i = 0; i < P; ++i) {
      s_acc[vg][h][lane * P + i] = acc[h][i];
      s_acc[vg][h][D / 2 + lane * P + i] = acc[h][P + i];
    }
  }
  __syncthreads();
  float* out = L.partial + ((static_cast<int64_t>(b) * L.kv_heads + g) * L.splits + split) *
                               group * (D + 2);
  for (int idx = threadIdx.x; idx < group * D; idx += kThreads) {
    const int h = idx / D, j = idx % D;
    float M = -INFINITY;
    for (int w = 0; w < VG; ++w) M = fmaxf(M, s_m[w][h]);
    float A = 0.f, Lsum = 0.f;
    if (M != -INFINITY) {
      for (int w = 0; w < VG; ++w) {
        const float e = __expf(s_m[w][h] - M);
        A += s_acc[w][h][j] * e;
        Lsum += s_l[w][h] * e;
      }
    }
    float* rec = out + h * (D + 2);
    rec[j] = A;
    if (j == 0) {
      rec[D] = M;
      rec[D + 1] = Lsum;
    }
  }
}

// One block per (query head, sequence), one thread per dimension.
__global__ void decode_merge(const DecodeLaunch L) {
  const int head = blockIdx.x, b = blockIdx.y, j = threadIdx.x, D = L.head_dim;
  const int group = L.heads / L.kv_heads, g = head / group, h = head % group;
  const float* base =
      L.partial + (static_cast<int64_t>(b) * L.kv_heads + g) * L.splits * group * (D + 2);
  float M = -INFINITY;
  for (int s = 0; s < L.splits; ++s) M = fmaxf(M, base[(s * group + h) * (D + 2) + D]);
  float A = 0.f, Lsum = 0.f;
  if (M != -INFINITY) {
    for (int s = 0; s < L.splits; ++s) {
      const float* rec = base + (s * group + h) * (D + 2);
      const float e = __expf(rec[D] - M);
      A += rec[j] * e;
      Lsum += rec[D + 1] * e;
    }
  }
  L.out[(static_cast<int64_t>(b) * L.heads + head) * D + j] = Lsum > 0.f ? A / Lsum : 0.f;
}

/// A kernel of this file: each takes the launch by value.
using DecodeKernel = void (*)(DecodeLaunch);

template <int D>
DecodeKernel partial_kernel(const DecodeLaunch& L) {
  if (L.magnitude_type == kDecodeFloat32) {
    if (L.entry_type == kDecodeFloat32) return decode_partial<D, float, float>;
    if (L.entry_type == kDecodeFloat16) return decode_partial<D, __half, float>;
    if (L.entry_type == kDecodeBFloat16) return decode_partial<D, __nv_bfloat16, float>;
  } else if (L.magnitude_type == kDecodeFloat16) {
    if (L.entry_type == kDecodeFloat32) return decode_partial<D, float, __half>;
    if (L.entry_type == kDecodeFloat16) return decode_partial<D, __half, __half>;
    if (L.entry_type == kDecodeBFloat16) return decode_partial<D, __nv_bfloat16, __half>;
  }
  return nullptr;
}

/// Checks `L` and queues its two kernels through
/// `launch(kernel, grid, block)`, which returns an error string or nullptr:
/// cudaLaunchKernel on a GPU, the emulation in the tests. Returns the first
/// error, or nullptr when both are queued.
template <class Launch>
const char* dispatch_decode(const DecodeLaunch& L, Launch&& launch) {
  if (L.count <= 0 || L.count > kDecodeMaxSequences) return "sequence count out of range";
  if (L.kv_heads <= 0 || L.heads % L.kv_heads != 0 || L.heads / L.kv_heads > kMaxG)
    return "query heads per KV head out of range";
  if (L.splits <= 0) return "split count out of range";
  DecodeKernel partial = nullptr;
  switch (L.head_dim) {
    case 32:
      partial = partial_kernel<32>(L);
      break;
    case 64:
      partial = partial_kernel<64>(L);
      break;
    case 128:
      partial = partial_kernel<128>(L);
      break;
    case 256:
      partial = partial_kernel<256>(L);
      break;
    default:
      return "head_dim not 32, 64, 128 or 256";
  }
  if (partial == nullptr) return "entry or magnitude dtype not supported";
  const dim3 grid(static_cast<unsigned>(L.splits), static_cast<unsigned>(L.kv_heads),
                  static_cast<unsigned>(L.count));
  if (const char* error = launch(partial, grid, dim3(kThreads))) return error;
  return launch(decode_merge, dim3(static_cast<unsigned>(L.heads), static_cast<unsigned>(L.count)),
                dim3(static_cast<unsigned>(L.head_dim)));
}

// ---- The append: one block per (KV head, sequence, side). ----

constexpr int kAppendThreads = 128;
static_assert(sizeof(AppendLaunch) <= 4096, "a kernel parameter holds at most 4 KiB");

template <typename T>
__device__ __forceinline__ T narrow_to(float x);
template <>
__device__ __forceinline__ float narrow_to<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half narrow_to<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow_to<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// The row of `rows` [count, D] nearest the block's direction `s_dir` (the
// largest dot product, the lowest index among equals; -inf and 0 when
// count is 0), left in s_best[0] and s_arg[0] for every thread. Each thread
// takes rows tid, tid + kAppendThreads, ...; call from every thread.
template <typename TE>
__device__ __forceinline__ void block_nearest(const TE* rows, int64_t count, int D,
                                              const float* s_dir, float* s_best, int* s_arg,
                                              int tid) {
  float best = -INFINITY;
  int arg = 0;
  for (int64_t e = tid; e < count; e += kAppendThreads) {
    float dot = 0.f;
    for (int i = 0; i < D; ++i) dot += s_dir[i] * widen(rows[e * D + i]);
    if (dot > best) {
      best = dot;
      arg = static_cast<int>(e);
    }
  }
  s_best[tid] = best;
  s_arg[tid] = arg;
  __syncthreads();
  for (int w = kAppendThreads / 2; w > 0; w /= 2) {
    if (tid < w) {
      const float o = s_best[tid + w];
      if (o > s_best[tid] || (o == s_best[tid] && s_arg[tid + w] < s_arg[tid])) {
        s_best[tid] = o;
        s_arg[tid] = s_arg[tid + w];
      }
    }
    __syncthreads();
  }
}

// As match_shared + append_matched for one vector (CodebookMode kNone or
// kCalibrated, deferred exact rows): magnitude and direction; the table's
// best entry in use (the lowest index among equals) codes it when its cosine
// exceeds the threshold; otherwise it becomes the head's next exact row
// (magnitude 1); a zero vector takes the zero code.
template <typename TE, typename TM>
__global__ void __launch_bounds__(kAppendThreads) decode_append(const AppendLaunch L) {
  __shared__ float s_x[kAppendMaxDim], s_dir[kAppendMaxDim];
  __shared__ float s_best[kAppendThreads];
  __shared__ int s_arg[kAppendThreads];
  __shared__ int64_t s_row, s_jit;
  const int g = blockIdx.x, b = blockIdx.y, side = blockIdx.z, tid = threadIdx.x;
  const int D = L.head_dim;
  const AppendSequence& S = L.seq[b];
  const AppendSide& A = S.side[side];
  const AppendTable& T = L.table[side];
  const int64_t n = S.column;

  // The head's just-in-time entries in use, read once: thread 0 advances
  // the count below, after every thread has passed the barriers between.
  if (tid == 0) s_jit = L.use_jit && A.jit != nullptr ? A.jit_used[g] : 0;
  float sq = 0.f;
  for (int i = tid; i < D; i += kAppendThreads) {
    const float x = A.vectors[static_cast<int64_t>(g) * D + i];
    s_x[i] = x;
    sq += x * x;
  }
  s_best[tid] = sq;
  __syncthreads();
  for (int w = kAppendThreads / 2; w > 0; w /= 2) {
    if (tid < w) s_best[tid] += s_best[tid + w];
    __syncthreads();
  }
  const float mag = sqrtf(s_best[0]);
  __syncthreads();  // s_best is reused below
  for (int i = tid; i < D; i += kAppendThreads) s_dir[i] = mag > 0.f ? s_x[i] / mag : 0.f;
  __syncthreads();

  const int entries = T.rows != nullptr && mag > 0.f ? T.count[g] : 0;
  const TE* rows = entries > 0 ? static_cast<const TE*>(T.rows) + (T.shared ? 0 : g) * T.capacity * D
                              : nullptr;
  block_nearest(rows, entries, D, s_dir, s_best, s_arg, tid);

  // The just-in-time stage: the head's entries in use, where the table
  // coded nothing.
  bool coded = entries > 0 && s_best[0] > T.threshold;  // the same in every thread
  int64_t hit = s_arg[0];
  const int64_t jit_in_use = s_jit;
  if (!coded && mag > 0.f && jit_in_use > 0) {
    __syncthreads();  // every thread has read s_best[0] and s_arg[0]
    block_nearest(static_cast<const TE*>(A.jit) + g * A.jit_capacity * D, jit_in_use, D, s_dir,
                  s_best, s_arg, tid);
    coded = s_best[0] > T.threshold;
    hit = T.jit_offset + s_arg[0];
  }
  const bool extend = L.use_jit && L.extend && A.jit != nullptr;

  if (tid == 0) {
    int64_t code = INT32_MAX;  // the zero code
    float stored = mag;
    int64_t row = -1;
    if (mag > 0.f) {
      if (coded) {
        code = hit;
      } else if (extend) {  // the vector's direction becomes the head's next entry
        if (A.jit_used[g] < A.jit_capacity) {
          row = A.jit_used[g];
          A.jit_used[g] = row + 1;
          code = T.jit_offset + row;
        } else {  // no room: the host sizes the table, so never
          stored = 0.f;
        }
      } else if (A.exact_used[g] < A.exact_capacity) {
        row = A.exact_used[g];
        A.exact_used[g] = row + 1;
        code = -row - 1;
        stored = 1.f;
      } else {  // no room: the host sizes the table, so never; stay in bounds
        stored = 0.f;
      }
    }
    s_row = row;
    if (A.code_bytes == 2) {
      static_cast<int16_t*>(A.code)[g * A.code_stride + n] =
          static_cast<int16_t>(code < INT16_MAX ? code : INT16_MAX);
    } else {
      static_cast<int32_t*>(A.code)[g * A.code_stride + n] = static_cast<int32_t>(code);
    }
    static_cast<TM*>(A.magnitude)[g * A.magnitude_stride + n] = narrow_to<TM>(stored);
    if (side == 0) S.positions[g * S.positions_stride + n] = static_cast<int32_t>(L.query_positions[b]);
  }
  const int group = L.heads / L.kv_heads;
  if (side == 0 && S.member != nullptr) {
    for (int h = tid; h < group; h += kAppendThreads) S.member[(g * group + h) * S.member_stride + n] = true;
  }
  __syncthreads();
  if (s_row >= 0 && extend) {
    TE* out = static_cast<TE*>(A.jit) + (g * A.jit_capacity + s_row) * D;
    for (int i = tid; i < D; i += kAppendThreads) out[i] = narrow_to<TE>(s_dir[i]);
  } else if (s_row >= 0) {
    TE* out = static_cast<TE*>(A.exact) + (g * A.exact_capacity + s_row) * D;
    for (int i = tid; i < D; i += kAppendThreads) out[i] = narrow_to<TE>(s_x[i]);
  }
}

/// A kernel taking the append launch by value.
using AppendKernel = void (*)(AppendLaunch);

/// Checks `L` and queues the append through `launch(kernel, grid, block)`,
/// as dispatch_decode does.
template <class Launch>
const char* dispatch_append(const AppendLaunch& L, Launch&& launch) {
  if (L.count <= 0 || L.count > kAppendMaxSequences) return "sequence count out of range";
  if (L.kv_heads <= 0 || L.kv_heads > kAppendMaxKvHeads || L.heads % L.kv_heads != 0)
    return "KV heads out of range";
  if (L.head_dim <= 0 || L.head_dim > kAppendMaxDim) return "head_dim out of range";
  AppendKernel kernel = nullptr;
  if (L.magnitude_type == kDecodeFloat32) {
    if (L.entry_type == kDecodeFloat32) kernel = decode_append<float, float>;
    if (L.entry_type == kDecodeFloat16) kernel = decode_append<__half, float>;
    if (L.entry_type == kDecodeBFloat16) kernel = decode_append<__nv_bfloat16, float>;
  } else if (L.magnitude_type == kDecodeFloat16) {
    if (L.entry_type == kDecodeFloat32) kernel = decode_append<float, __half>;
    if (L.entry_type == kDecodeFloat16) kernel = decode_append<__half, __half>;
    if (L.entry_type == kDecodeBFloat16) kernel = decode_append<__nv_bfloat16, __half>;
  }
  if (kernel == nullptr) return "entry or magnitude dtype not supported";
  return launch(kernel,
                dim3(static_cast<unsigned>(L.kv_heads), static_cast<unsigned>(L.count), 2u),
                dim3(kAppendThreads));
}

}  // namespace
}  // namespace detail
}  // namespace spindlekv
