#include "runtime/detail/decode_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "runtime/detail/decode_launch.h"

#ifdef SPINDLEKV_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <map>
#include <mutex>
#include <optional>
#endif

namespace spindlekv {
namespace detail {
namespace {

bool decode_type(at::ScalarType t, int32_t* out) {
  switch (t) {
    case at::kFloat:
      *out = kDecodeFloat32;
      return true;
    case at::kHalf:
      *out = kDecodeFloat16;
      return true;
    case at::kBFloat16:
      *out = kDecodeBFloat16;
      return true;
    default:
      return false;
  }
}

// A [rows, n] table whose columns are adjacent (a view of leading columns).
bool rows_of_columns(const at::Tensor& t) { return t.dim() == 2 && t.stride(1) == 1; }

bool side_applies(const CodedVectors& c, at::ScalarType entry, at::ScalarType magnitude) {
  if (c.quantized()) return false;
  if (c.code.scalar_type() != at::kShort && c.code.scalar_type() != at::kInt) return false;
  if (c.magnitude.scalar_type() != magnitude) return false;
  if (c.exact.scalar_type() != entry || c.jit.scalar_type() != entry) return false;
  return rows_of_columns(c.code) && rows_of_columns(c.magnitude) && c.exact.is_contiguous() &&
         c.jit.is_contiguous();
}

DecodeSide side(const CodedVectors& c) {
  DecodeSide s;
  s.code = c.code.data_ptr();
  s.code_stride = c.code.stride(0);
  s.code_bytes = c.code.scalar_type() == at::kShort ? 2 : 4;
  s.magnitude = c.magnitude.data_ptr();
  s.magnitude_stride = c.magnitude.stride(0);
  s.exact_capacity = c.exact.size(1);
  s.exact = s.exact_capacity > 0 ? c.exact.data_ptr() : nullptr;
  s.jit_capacity = c.jit.size(1);
  s.jit = s.jit_capacity > 0 ? c.jit.data_ptr() : nullptr;
  return s;
}

DecodeTable table(const CodebookTables& t) {
  DecodeTable out;
  out.capacity = t.calibrated_capacity();
  out.rows = out.capacity > 0 ? t.calibrated.data_ptr() : nullptr;
  out.shared = t.shared() ? 1 : 0;
  return out;
}

// The tests' CPU launcher (set_cpu_decode_launcher).
DecodeLauncher g_cpu_launcher = nullptr;
int g_cpu_multiprocessors = 4;

#ifdef SPINDLEKV_WITH_CUDA
// What a CUDA device is, asked once per device: whether the kernels were
// built for it, and its multiprocessors.
struct DeviceFacts {
  bool runs = false;
  int multiprocessors = 1;
};

const DeviceFacts& device_facts(const c10::Device& device) {
  static std::mutex mutex;
  static std::map<int, DeviceFacts> known;
  const int index = device.has_index() ? device.index() : c10::cuda::current_device();
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(index);
  if (it == known.end()) {
    const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(index));
    DeviceFacts facts;
    facts.runs = decode_kernel_runs_here();
    facts.multiprocessors = decode_multiprocessors(index);
    it = known.emplace(index, facts).first;
  }
  return it->second;
}
#endif

}  // namespace

bool fused_decode_built() {
#ifdef SPINDLEKV_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool fused_decode_applies(const std::vector<const SequenceLayer*>& layers,
                          const CodebookTables& keys, const CodebookTables& values,
                          const c10::Device& device, int64_t heads, int64_t head_dim) {
  if (layers.empty()) return false;
  if (device.is_cuda()) {
    if (!fused_decode_built()) return false;
#ifdef SPINDLEKV_WITH_CUDA
    if (!device_facts(device).runs) return false;
#endif
  } else if (!device.is_cpu() || g_cpu_launcher == nullptr) {
    return false;
  }
  if (head_dim != 32 && head_dim != 64 && head_dim != 128 && head_dim != 256) return false;
  const CodedVectors& first = layers.front()->keys;
  const int64_t kv = first.code.size(0);
  if (kv <= 0 || heads % kv != 0 || heads / kv > kDecodeMaxGroup) return false;
  const at::ScalarType entry = first.exact.scalar_type();
  const at::ScalarType magnitude = first.magnitude.scalar_type();
  int32_t type = 0;
  if (!decode_type(entry, &type) || !decode_type(magnitude, &type) || magnitude == at::kBFloat16)
    return false;
  for (const CodebookTables* t : {&keys, &values}) {
    if (t->calibrated.defined() &&
        (t->calibrated.scalar_type() != entry || !t->calibrated.is_contiguous()))
      return false;
  }
  for (const SequenceLayer* S : layers) {
    if (!side_applies(S->keys, entry, magnitude) || !side_applies(S->values, entry, magnitude))
      return false;
    if (!rows_of_columns(S->positions) || S->positions.scalar_type() != at::kInt) return false;
    if (S->member.defined() &&
        (!rows_of_columns(S->member) || S->member.scalar_type() != at::kBool))
      return false;
  }
  return true;
}

at::Tensor fused_decode_attention(const std::vector<const SequenceLayer*>& layers,
                                  const CodebookTables& keys, const CodebookTables& values,
                                  const at::Tensor& queries_in, const at::Tensor& positions_in,
                                  const at::Tensor& cos, const at::Tensor& sin,
                                  int64_t sliding_window) {
  const int64_t B = queries_in.size(0), heads = queries_in.size(1), d = queries_in.size(3);
  SKV_CHECK(queries_in.size(2) == 1, "fused decode takes one new token per sequence, got ",
            queries_in.size(2));
  SKV_CHECK_EQ(static_cast<int64_t>(layers.size()), B, "layers per sequence");
  const c10::Device device = layers.front()->keys.code.device();
  DecodeLauncher launch = nullptr;
  void* stream = nullptr;
  int sms = 1;
#ifdef SPINDLEKV_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
#endif
  if (device.is_cpu()) {
    SKV_CHECK(g_cpu_launcher != nullptr, "fused decode attention on the CPU needs a CPU launcher");
    launch = g_cpu_launcher;
    sms = g_cpu_multiprocessors;
  } else {
#ifdef SPINDLEKV_WITH_CUDA
    guard.emplace(device);
    launch = launch_decode_attention;
    sms = device_facts(device).multiprocessors;
    stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
#else
    SKV_THROW(kInternal, "fused decode attention: this build has no CUDA kernel");
#endif
  }
  const int64_t kv = layers.front()->keys.code.size(0), group = heads / kv;
  const at::Tensor queries = queries_in.to(device, at::kFloat).reshape({B, heads, d}).contiguous();
  const at::Tensor positions = positions_in.to(device, at::kLong).reshape({B}).contiguous();
  const at::Tensor cos_c = cos.contiguous(), sin_c = sin.contiguous();
  at::Tensor out = at::empty({B, heads, d}, queries.options());
  for (int64_t start = 0; start < B; start += kDecodeMaxSequences) {
    const int64_t count = std::min<int64_t>(kDecodeMaxSequences, B - start);
    DecodeLaunch L;
    L.count = static_cast<int32_t>(count);
    int64_t most = 1;
    for (int64_t i = 0; i < count; ++i) {
      const SequenceLayer& S = *layers[start + i];
      DecodeSequence& q = L.seq[i];
      q.keys = side(S.keys);
      q.values = side(S.values);
      q.positions = S.positions.data_ptr<int32_t>();
      q.positions_stride = S.positions.stride(0);
      if (S.member.defined()) {
        q.member = S.member.data_ptr<bool>();
        q.member_stride = S.member.stride(0);
      }
      q.slots = S.positions.size(1);
      most = std::max(most, q.slots);
    }
    L.key_table = table(keys);
    L.value_table = table(values);
    L.queries = queries.data_ptr<float>() + start * heads * d;
    L.query_positions = positions.data_ptr<int64_t>() + start;
    L.cos = cos_c.data_ptr<float>();
    L.sin = sin_c.data_ptr<float>();
    L.out = out.data_ptr<float>() + start * heads * d;
    L.heads = static_cast<int32_t>(heads);
    L.kv_heads = static_cast<int32_t>(kv);
    L.head_dim = static_cast<int32_t>(d);
    // Enough blocks to fill the device a few times over, each with at
    // least 64 slots of its longest sequence.
    const int64_t want = (4 * static_cast<int64_t>(sms) + count * kv - 1) / (count * kv);
    L.splits = static_cast<int32_t>(std::clamp<int64_t>(std::min(want, (most + 63) / 64), 1, 1024));
    L.sliding_window = sliding_window;
    L.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    decode_type(layers.front()->keys.exact.scalar_type(), &L.entry_type);
    decode_type(layers.front()->keys.magnitude.scalar_type(), &L.magnitude_type);
    at::Tensor partial = at::empty({count * kv * L.splits * group * (d + 2)}, queries.options());
    L.partial = partial.data_ptr<float>();
    const char* error = launch(L, stream);
    SKV_CHECK(error == nullptr, "fused decode attention: ", error);
  }
  return out.view({B, heads, 1, d});
}

void set_cpu_decode_launcher(DecodeLauncher launcher, int multiprocessors) {
  g_cpu_launcher = launcher;
  g_cpu_multiprocessors = std::max(1, multiprocessors);
}

}  // namespace detail
}  // namespace spindlekv
