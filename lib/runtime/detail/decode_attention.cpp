#include "runtime/detail/decode_attention.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "runtime/detail/decode_launch.h"
#include "runtime/detail/host_transfer.h"

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
  // The fused kernels read exact rows in the storage dtype only: rows a row
  // codec holds (fp8, KIVI, TurboQuant, q8_0, ...) are decoded by the
  // codec's ATen path, which the cache then takes.
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

// The tests' CPU launchers (set_cpu_decode_launcher).
DecodeLauncher g_cpu_launcher = nullptr;
AppendLauncher g_cpu_append_launcher = nullptr;
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

// Where a fused launch goes: the CUDA kernels on the current stream of a
// CUDA device (made current while this lives), or the tests' CPU launchers.
struct Target {
  explicit Target(const c10::Device& device) {
    if (device.is_cpu()) {  // the tests' launchers (either may be null)
      attend = g_cpu_launcher;
      append = g_cpu_append_launcher;
      multiprocessors = g_cpu_multiprocessors;
      return;
    }
#ifdef SPINDLEKV_WITH_CUDA
    guard.emplace(device);
    attend = launch_decode_attention;
    append = launch_decode_append;
    multiprocessors = device_facts(device).multiprocessors;
    stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
#else
    SKV_THROW(kInternal, "fused decode: this build has no CUDA kernel");
#endif
  }
  DecodeLauncher attend = nullptr;
  AppendLauncher append = nullptr;
  void* stream = nullptr;
  int multiprocessors = 1;
#ifdef SPINDLEKV_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
#endif
};

// Whether fused launches can run on `device` at all (`append`: the append's).
bool device_runs_fused(const c10::Device& device, bool append) {
  if (device.is_cuda()) {
    if (!fused_decode_built()) return false;
#ifdef SPINDLEKV_WITH_CUDA
    return device_facts(device).runs;
#endif
    return false;
  }
  return device.is_cpu() && (append ? g_cpu_append_launcher != nullptr : g_cpu_launcher != nullptr);
}

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
  if (layers.empty() || !device_runs_fused(device, /*append=*/false)) return false;
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
  const Target target(device);
  SKV_CHECK(target.attend != nullptr, "fused decode attention: no launcher for ", device);
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
    const int64_t want =
        (4 * static_cast<int64_t>(target.multiprocessors) + count * kv - 1) / (count * kv);
    L.splits = static_cast<int32_t>(std::clamp<int64_t>(std::min(want, (most + 63) / 64), 1, 1024));
    L.sliding_window = sliding_window;
    L.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    decode_type(layers.front()->keys.exact.scalar_type(), &L.entry_type);
    decode_type(layers.front()->keys.magnitude.scalar_type(), &L.magnitude_type);
    at::Tensor partial = at::empty({count * kv * L.splits * group * (d + 2)}, queries.options());
    L.partial = partial.data_ptr<float>();
    // Seen by profilers (and gpu_bench's call counts) as one call.
    RECORD_FUNCTION("spindlekv::decode_attention_kernel", std::vector<c10::IValue>());
    const char* error = target.attend(L, target.stream);
    SKV_CHECK(error == nullptr, "fused decode attention: ", error);
  }
  return out.view({B, heads, 1, d});
}

bool fused_append_applies(CodebookMode mode, bool quantized, StorageDtype dtype,
                          const CodebookTables& keys, const CodebookTables& values,
                          const c10::Device& device, int64_t kv, int64_t head_dim) {
  if (quantized || kv <= 0 || kv > kAppendMaxKvHeads || head_dim <= 0 || head_dim > kAppendMaxDim)
    return false;
  if (!device_runs_fused(device, /*append=*/true)) return false;
  const at::ScalarType entry = entry_scalar_type(dtype);
  const at::ScalarType magnitude = magnitude_scalar_type(dtype);
  int32_t type = 0;
  if (!decode_type(entry, &type) || !decode_type(magnitude, &type) || magnitude == at::kBFloat16)
    return false;
  for (const CodebookTables* t : {&keys, &values}) {
    if (mode != CodebookMode::kNone && t->calibrated_capacity() > 0 &&
        (t->calibrated.scalar_type() != entry || !t->calibrated.is_contiguous() ||
         t->calibrated.device().type() != device.type() || t->calibrated.size(2) != head_dim ||
         (t->calibrated.size(0) != 1 && t->calibrated.size(0) != kv)))
      return false;
  }
  return true;
}

namespace {

// One side's host half of a fused append: the deferred exact-row bookkeeping
// of append_matched for one new slot per head, room for it in every table,
// and the kernel's view of them.
AppendSide prepare_side(CodedVectors& c, const float* vectors, int64_t calibrated_capacity,
                        bool use_jit, bool extend, const c10::Device& device) {
  if (c.exact_unsettled + 1 > kExactSettleSlots) settle_exact_rows(c);
  if (!c.exact_used.defined()) c.exact_used = to_device(c.exact_count, at::kLong, device);
  c.exact = grow_rows(c.exact, exact_rows_bound(c) + 2).contiguous();
  c.exact_unsettled += 1;
  if (use_jit) {  // the same bookkeeping for the entries an extension builds
    if (c.jit_unsettled + 1 > kExactSettleSlots) settle_jit_entries(c);
    if (!c.jit_used.defined()) c.jit_used = to_device(c.jit_count, at::kLong, device);
    if (extend) {
      c.jit = grow_rows(c.jit, jit_entries_bound(c) + 1).contiguous();
      c.jit_unsettled += 1;
    }
  }
  fit_codes(c, -exact_rows_bound(c), calibrated_capacity + jit_entries_bound(c));
  c.code = extend_columns(c.code_buffer, c.code, 1);
  c.magnitude = extend_columns(c.magnitude_buffer, c.magnitude, 1);
  AppendSide s;
  s.vectors = vectors;
  s.code = c.code.data_ptr();
  s.code_stride = c.code.stride(0);
  s.code_bytes = c.code.scalar_type() == at::kShort ? 2 : 4;
  s.magnitude = c.magnitude.data_ptr();
  s.magnitude_stride = c.magnitude.stride(0);
  s.exact = c.exact.data_ptr();
  s.exact_capacity = c.exact.size(1);
  s.exact_used = c.exact_used.data_ptr<int64_t>();
  if (use_jit && c.jit.size(1) > 0) {
    s.jit = c.jit.data_ptr();
    s.jit_capacity = c.jit.size(1);
    s.jit_used = c.jit_used.data_ptr<int64_t>();
  }
  return s;
}

AppendTable append_table(const CodebookTables& t, CodebookMode mode, int64_t kv) {
  AppendTable out;
  out.threshold = static_cast<float>(t.threshold);
  out.jit_offset = t.calibrated_capacity();
  const bool calibrated = mode == CodebookMode::kCalibrated || mode == CodebookMode::kHybrid;
  if (!calibrated || t.calibrated_capacity() == 0) return out;
  out.rows = t.calibrated.data_ptr();
  out.capacity = t.calibrated_capacity();
  out.shared = t.shared() ? 1 : 0;
  for (int64_t g = 0; g < kv; ++g) {
    const int64_t n = t.calibrated_sizes[t.calibrated_sizes.size() == 1 ? 0 : g];
    out.count[g] = static_cast<int32_t>(std::clamp<int64_t>(n, 0, out.capacity));
  }
  return out;
}

}  // namespace

void fused_append(const std::vector<SequenceLayer*>& layers, const CodebookTables& keys,
                  const CodebookTables& values, CodebookMode mode, bool extend,
                  const at::Tensor& new_keys, const at::Tensor& new_values,
                  const at::Tensor& positions_in, int64_t heads) {
  const int64_t B = new_keys.size(0), kv = new_keys.size(1), d = new_keys.size(3);
  SKV_CHECK(new_keys.size(2) == 1, "fused append takes one new token per sequence, got ",
            new_keys.size(2));
  SKV_CHECK_EQ(static_cast<int64_t>(layers.size()), B, "layers per sequence");
  const c10::Device device = layers.front()->keys.code.device();
  const Target target(device);
  SKV_CHECK(target.append != nullptr, "fused append: no launcher for ", device);
  const at::ScalarType entry = layers.front()->keys.exact.scalar_type();
  for (const CodebookTables* t : {&keys, &values}) {
    SKV_CHECK(mode == CodebookMode::kNone || t->calibrated_capacity() == 0 ||
                  (t->calibrated.scalar_type() == entry && t->calibrated.is_contiguous()),
              "fused append: a calibrated table of dtype ", t->calibrated.scalar_type(),
              " for exact rows of dtype ", entry, " (the kernel reads both as one)");
  }
  const at::Tensor k = new_keys.to(device, at::kFloat).contiguous();
  const at::Tensor v = new_values.to(device, at::kFloat).contiguous();
  const at::Tensor positions = positions_in.to(device, at::kLong).reshape({B}).contiguous();
  const bool use_jit = mode == CodebookMode::kJustInTime || mode == CodebookMode::kHybrid;
  for (int64_t start = 0; start < B; start += kAppendMaxSequences) {
    const int64_t count = std::min<int64_t>(kAppendMaxSequences, B - start);
    AppendLaunch L;
    L.use_jit = use_jit ? 1 : 0;
    L.extend = use_jit && extend ? 1 : 0;
    L.count = static_cast<int32_t>(count);
    for (int64_t i = 0; i < count; ++i) {
      SequenceLayer& S = *layers[start + i];
      AppendSequence& q = L.seq[i];
      const int64_t n = S.positions.size(1);
      SKV_CHECK(S.keys.code.size(1) == n && S.values.code.size(1) == n,
                "fused append: slots differ between positions (", n, ") and codes (",
                S.keys.code.size(1), ", ", S.values.code.size(1), ")");
      q.column = n;
      q.side[0] = prepare_side(S.keys, k.data_ptr<float>() + (start + i) * kv * d,
                               keys.calibrated_capacity(), use_jit, extend, device);
      q.side[1] = prepare_side(S.values, v.data_ptr<float>() + (start + i) * kv * d,
                               values.calibrated_capacity(), use_jit, extend, device);
      S.positions = extend_columns(S.positions_buffer, S.positions, 1);
      q.positions = S.positions.data_ptr<int32_t>();
      q.positions_stride = S.positions.stride(0);
      if (S.member.defined()) {
        S.member = extend_columns(S.member_buffer, S.member, 1);
        q.member = S.member.data_ptr<bool>();
        q.member_stride = S.member.stride(0);
      }
    }
    L.table[0] = append_table(keys, mode, kv);
    L.table[1] = append_table(values, mode, kv);
    L.query_positions = positions.data_ptr<int64_t>() + start;
    L.heads = static_cast<int32_t>(heads);
    L.kv_heads = static_cast<int32_t>(kv);
    L.head_dim = static_cast<int32_t>(d);
    decode_type(layers[start]->keys.exact.scalar_type(), &L.entry_type);
    decode_type(layers[start]->keys.magnitude.scalar_type(), &L.magnitude_type);
    RECORD_FUNCTION("spindlekv::decode_append_kernel", std::vector<c10::IValue>());
    const char* error = target.append(L, target.stream);
    SKV_CHECK(error == nullptr, "fused decode append: ", error);
  }
}

void set_cpu_decode_launcher(DecodeLauncher launcher, int multiprocessors, AppendLauncher append) {
  g_cpu_launcher = launcher;
  g_cpu_append_launcher = append;
  g_cpu_multiprocessors = std::max(1, multiprocessors);
}

}  // namespace detail
}  // namespace spindlekv
