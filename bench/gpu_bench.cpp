// The compressed KV cache on a GPU against references measured in the same
// run (issue #16; only the ratios are meaningful):
//   1. one Llama-3-8B-shaped layer (32 query / 8 KV heads, head_dim 128) at
//      each --tokens and --batch: a decode step over the compressed cache
//      (eviction alone, calibrated, just in time; each --ratios) against
//      dense bfloat16 attention over the same full K/V (LibTorch's
//      scaled_dot_product_attention with GQA, the flash backend where it has
//      one), the new token's K/V appended in both;
//   2. compression of that layer (batch 1) against its prefill attention
//      (causal scaled_dot_product_attention, bfloat16);
//   3. with --model (a Hugging Face directory, bench/hf_peer.py writes one):
//      4 layers end to end, greedy decode ms/step with the full cache against
//      the compressed cache, and the forward pass's tokens/s in float32 and
//      bfloat16 against Hugging Face transformers' numbers from --hf-result
//      (bench/hf_peer.py, run on the same GPU in the same job).
// K/V are synthetic as in bench/runtime_bench.cpp: 85% near one of a random
// codebook's directions, the rest random; the codebook stands in for a
// calibrated one (speed only, not accuracy).
//
// Usage: gpu_bench [--device cuda] [--tokens 8192,32768,131072] [--batch 1,16]
//                  [--ratios 0.1,0.2] [--steps N] [--max-seconds S]
//                  [--jit-max-tokens N] [--model DIR] [--hf-result FILE]
//                  [--e2e-tokens N] [--call-names 1]
// --call-names 1 lists the counted ATen calls of each decode step by name.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/rope.h"
#include "core/threads.h"
#include "model/attention.h"
#include "model/compressed_prefill.h"
#include "model/llama_model.h"
#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"

using namespace spindlekv;

namespace {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
constexpr bool kHasSdpa = true;
#else
constexpr bool kHasSdpa = false;
#endif

c10::Device g_device = c10::kCPU;
bool g_call_names = false;  // --call-names

void sync() {
  if (g_device.is_cuda()) torch::cuda::synchronize();
}

// Seconds per call of fn: `warmup` untimed calls, then `reps` timed ones.
double timed(const std::function<void()>& fn, int reps = 1, int warmup = 0) {
  for (int i = 0; i < warmup; ++i) fn();
  sync();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) fn();
  sync();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

// ATen calls made directly inside SpindleKV's profiler scopes
// ("spindlekv::decode_append", "spindlekv::decode_attend", ...), counting a
// call only when it or a call it makes does work (views and allocations
// alone do not): about one kernel launch each on a GPU, so the count says
// what a step costs in launches on any device.
class ScopeCalls {
 public:
  static constexpr const char* kReadBackScope = "spindlekv::read_back";

  ScopeCalls() : handle_(at::addThreadLocalCallback(at::RecordFunctionCallback(&enter, &leave))) {
    state() = State();
  }
  ~ScopeCalls() { at::removeCallback(handle_); }
  int64_t operator[](const std::string& scope) const {
    const auto it = state().counts.find(scope);
    return it == state().counts.end() ? 0 : it->second;
  }
  // Calls in `scope` that read the device back (the host waits for it), by
  // name: the runtime's copies to the host are the scope
  // "spindlekv::read_back" (lib/runtime/detail/host_transfer.h).
  int64_t read_backs(const std::string& scope) const {
    static const char* const kReadBack[] = {
        "aten::item",  "aten::_local_scalar_dense", "aten::nonzero",  "aten::masked_select",
        "aten::equal", "aten::is_nonzero",          "aten::allclose", "aten::_unique2",
        kReadBackScope};
    int64_t n = 0;
    for (const char* name : kReadBack) {
      const auto it = state().names[scope].find(name);
      if (it != state().names[scope].end()) n += it->second;
    }
    return n;
  }
  // "name xN, ..." of the calls counted in `scope`, most frequent first.
  std::string names(const std::string& scope) const {
    std::vector<std::pair<int64_t, std::string>> sorted;
    for (const auto& [name, n] : state().names[scope]) sorted.emplace_back(-n, name);
    std::sort(sorted.begin(), sorted.end());
    std::string out;
    for (const auto& [n, name] : sorted) {
      out += (out.empty() ? "" : ", ") + name + " x" + std::to_string(-n);
    }
    return out;
  }

 private:
  struct Frame {
    std::string scope;
    int depth = 0;      // ATen calls open inside this scope
    bool work = false;  // the open top-level call did work
  };
  struct State {
    std::vector<Frame> frames;
    std::map<std::string, int64_t> counts;
    std::map<std::string, std::map<std::string, int64_t>> names;  // scope -> call -> count
  };
  struct Marker : at::ObserverContext {
    explicit Marker(bool s) : scope(s) {}
    bool scope;
  };
  static State& state() {
    static thread_local State s;
    return s;
  }
  static bool is_view(const char* name) {
    static const char* const kViews[] = {"aten::view",
                                         "aten::narrow",
                                         "aten::slice",
                                         "aten::select",
                                         "aten::expand",
                                         "aten::unsqueeze",
                                         "aten::squeeze",
                                         "aten::transpose",
                                         "aten::permute",
                                         "aten::t",
                                         "aten::as_strided",
                                         "aten::alias",
                                         "aten::detach",
                                         "aten::reshape",
                                         "aten::_reshape_alias",
                                         "aten::empty",
                                         "aten::empty_like",
                                         "aten::empty_strided",
                                         "aten::resolve_conj",
                                         "aten::resolve_neg",
                                         "aten::to",
                                         "aten::contiguous",
                                         "aten::lift_fresh",
                                         "aten::resize_"};
    for (const char* v : kViews) {
      if (std::strcmp(name, v) == 0) return true;
    }
    return false;
  }
  static std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
    State& s = state();
    // A read-back is a call of the scope it is made in, not a scope.
    if (fn.scope() == at::RecordScope::USER_SCOPE &&
        std::strncmp(fn.name(), "spindlekv::", 11) == 0 &&
        std::strcmp(fn.name(), kReadBackScope) != 0) {
      s.frames.push_back(Frame{fn.name()});
      return std::make_unique<Marker>(true);
    }
    if (s.frames.empty()) return nullptr;
    Frame& f = s.frames.back();
    if (f.depth++ == 0) f.work = false;
    if (!is_view(fn.name())) f.work = true;
    return std::make_unique<Marker>(false);
  }
  static void leave(const at::RecordFunction& fn, at::ObserverContext* context) {
    if (context == nullptr) return;
    State& s = state();
    if (static_cast<Marker*>(context)->scope) {
      s.frames.pop_back();
      return;
    }
    Frame& f = s.frames.back();
    if (--f.depth == 0 && f.work) {
      ++s.counts[f.scope];
      ++s.names[f.scope][fn.name()];
    }
  }
  at::CallbackHandle handle_;
};

std::vector<double> parse_list(const std::string& s) {
  std::vector<double> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::atof(item.c_str()));
  return out;
}

at::TensorOptions opts(at::ScalarType t = at::kFloat) {
  return at::TensorOptions().dtype(t).device(g_device);
}

// [kv, T, d]: 85% within a small angle of one of the centres, 15% random.
at::Tensor clustered(const at::Tensor& centres, int64_t T, double noise) {
  const int64_t kv = centres.size(0), K = centres.size(1), d = centres.size(2);
  at::Tensor pick = at::randint(K, {kv, T}, opts(at::kLong));
  at::Tensor x = centres.gather(1, pick.unsqueeze(2).expand({kv, T, d})) +
                 noise * at::randn({kv, T, d}, opts());
  at::Tensor random = at::randn({kv, T, d}, opts()) / std::sqrt(static_cast<double>(d));
  x = at::where(at::rand({kv, T, 1}, opts()) < 0.15, random, x);
  return x / x.norm(2, -1, true) * (0.5 + at::rand({kv, T, 1}, opts()) * 2);
}

// Dense attention of q [B, h, t, d] over k, v [B, kv, n, d] (bfloat16):
// LibTorch's fused kernel where it has one, else ours (float32 path).
at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           bool causal) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal, std::nullopt, true);
#else
  const int64_t t = q.size(2), n = k.size(2);
  at::Tensor kpos = at::arange(n, opts(at::kLong));
  at::Tensor qpos = causal ? kpos : at::full({t}, n - 1, opts(at::kLong));
  return grouped_query_attention(q, k, v, qpos, kpos).output;
#endif
}

std::shared_ptr<Artifact> synthetic_artifact(const CacheGeometry& g, int64_t K, uint64_t seed) {
  at::manual_seed(seed);
  auto a = std::make_shared<Artifact>();
  a->num_layers = g.num_layers;
  a->num_heads = g.num_heads;
  a->num_kv_heads = g.num_kv_heads;
  a->head_dim = g.head_dim;
  for (int64_t l = 0; l < g.num_layers; ++l) {
    at::Tensor kc = at::randn({g.num_kv_heads, K, g.head_dim});
    at::Tensor vc = at::randn({g.num_kv_heads, K, g.head_dim});
    a->layers.push_back(
        {kc / kc.norm(2, -1, true), vc / vc.norm(2, -1, true),
         std::vector<int64_t>(g.num_kv_heads, K), std::vector<int64_t>(g.num_kv_heads, K),
         std::vector<double>(g.num_kv_heads, 0.85), std::vector<double>(g.num_kv_heads, 0.85)});
  }
  a->pyramid.context_ratios = {0.0, 1.0};
  a->pyramid.fractions = {std::vector<double>(g.num_layers, 0.0),
                          std::vector<double>(g.num_layers, 1.0)};
  a->calibrated = a->pyramid;
  return a;
}

struct Mode {
  const char* name;
  CodebookMode codebook;
};
const Mode kModes[] = {{"eviction", CodebookMode::kNone},
                       {"calibrated", CodebookMode::kCalibrated},
                       {"jit", CodebookMode::kJustInTime}};

CompressionParameters parameters(CodebookMode mode, double ratio) {
  CompressionParameters p;
  p.reserve_ratio = ratio;
  p.budget = BudgetKind::kUniform;
  p.codebook = mode;
  p.storage_dtype = StorageDtype::kBFloat16;
  // An engine's decode step: no entries built while decoding (the host
  // would decide), so the step can run ahead of the host.
  p.extend_codebook_when_decoding = false;
  return p;
}

// Section 1 and 2 for one context length.
void layer_bench(int64_t T, const std::vector<double>& batches, const std::vector<double>& ratios,
                 int64_t steps, double max_seconds, int64_t jit_max_tokens) {
  const int64_t heads = 32, kv = 8, d = 128, K = 1024, window = 32;
  CacheGeometry g;
  g.num_layers = 1;
  g.num_heads = heads;
  g.num_kv_heads = kv;
  g.head_dim = d;
  g.rope.theta = 500000;
  auto artifact = synthetic_artifact(g, K, 1);
  at::Tensor kc = artifact->layers[0].key_codebook.to(g_device);
  at::Tensor vc = artifact->layers[0].value_codebook.to(g_device);
  const double noise = 0.08 / std::sqrt(static_cast<double>(d));
  at::Tensor keys = clustered(kc, T, noise), values = clustered(vc, T, noise);  // pre-RoPE
  at::Tensor pos = at::arange(T + steps, opts(at::kLong));
  RopeTables rope = rope_tables(rope_inverse_frequencies(g.rope, d).to(g_device), pos);
  RopeTables prefix{rope.cos.narrow(0, 0, T), rope.sin.narrow(0, 0, T)};
  at::Tensor k_rot = apply_rope(keys.unsqueeze(0), prefix);  // [1, kv, T, d]

  // The layer's prefill attention (bfloat16, causal), and the window's
  // attention that stage 1 scores with (float32, 32 rows).
  at::Tensor q_all = (at::randn({1, kv, 1, T, d}, opts()).expand({1, kv, heads / kv, T, d}) +
                      0.5 * at::randn({1, kv, heads / kv, T, d}, opts()))
                         .reshape({1, heads, T, d}) *
                     2.0;
  at::Tensor qb = q_all.to(at::kBFloat16), kb = k_rot.to(at::kBFloat16),
             vb = values.unsqueeze(0).to(at::kBFloat16);
  const double t_prefill = timed([&] { dense_attention(qb, kb, vb, true); }, 3, 1);
  at::Tensor window_att =
      grouped_query_attention(q_all.narrow(2, T - window, window), k_rot, values.unsqueeze(0),
                              pos.narrow(0, T - window, window), pos.narrow(0, 0, T), 0, window)
          .probabilities[0];
  std::printf("\n== one layer, %lld tokens (32 / 8 heads, head_dim 128) ==\n", (long long)T);
  std::printf("prefill attention (bf16, %s): %.2f ms\n",
              kHasSdpa ? "scaled_dot_product_attention" : "ours", 1e3 * t_prefill);
  q_all = at::Tensor();
  qb = at::Tensor();

  // Decode inputs, the same for every cache.
  std::vector<at::Tensor> qs, ks, vs;
  const int64_t Bmax = static_cast<int64_t>(*std::max_element(batches.begin(), batches.end()));
  for (int64_t s = 0; s < steps; ++s) {
    qs.push_back(at::randn({Bmax, heads, 1, d}, opts()));
    ks.push_back(clustered(kc, Bmax, noise).transpose(0, 1).unsqueeze(2).contiguous());
    vs.push_back(clustered(vc, Bmax, noise).transpose(0, 1).unsqueeze(2).contiguous());
  }

  std::vector<double> compress_seconds;  // per (ratio, mode), from the first batch
  for (const double& bd : batches) {
    const int64_t B = static_cast<int64_t>(bd);
    const bool first_batch = &bd == &batches.front();
    size_t config = 0;
    // Dense bfloat16 reference: preallocated, the new token written in place.
    at::Tensor full_k = at::empty({B, kv, T + steps, d}, opts(at::kBFloat16));
    at::Tensor full_v = at::empty({B, kv, T + steps, d}, opts(at::kBFloat16));
    full_k.narrow(2, 0, T).copy_(kb.expand({B, kv, T, d}));
    full_v.narrow(2, 0, T).copy_(vb.expand({B, kv, T, d}));
    std::vector<at::Tensor> qsb, ksb, vsb;
    for (int64_t s = 0; s < steps; ++s) {
      RopeTables r{rope.cos.narrow(0, T + s, 1), rope.sin.narrow(0, T + s, 1)};
      qsb.push_back(qs[s].narrow(0, 0, B).to(at::kBFloat16));
      ksb.push_back(apply_rope(ks[s].narrow(0, 0, B), r).to(at::kBFloat16));
      vsb.push_back(vs[s].narrow(0, 0, B).to(at::kBFloat16));
    }
    const double t_dense = timed(
                               [&] {
                                 for (int64_t s = 0; s < steps; ++s) {
                                   full_k.narrow(2, T + s, 1).copy_(ksb[s]);
                                   full_v.narrow(2, T + s, 1).copy_(vsb[s]);
                                   dense_attention(qsb[s], full_k.narrow(2, 0, T + s + 1),
                                                   full_v.narrow(2, 0, T + s + 1), false);
                                 }
                               },
                               2, 1) /
                           steps;
    full_k = at::Tensor();
    full_v = at::Tensor();
    std::printf("batch %lld: dense bf16 decode attention %.3f ms/step\n", (long long)B,
                1e3 * t_dense);
    std::fflush(stdout);
    for (double r : ratios) {
      for (const Mode& mode : kModes) {
        const size_t this_config = config++;
        if (this_config < compress_seconds.size() && B > 1 &&
            compress_seconds[this_config] * B > max_seconds) {
          std::printf("  %-10s r=%.1f: skipped (compressing %lld sequences would take ~%.0f s)\n",
                      mode.name, r, (long long)B, compress_seconds[this_config] * B);
          continue;
        }
        if (mode.codebook == CodebookMode::kJustInTime && T > jit_max_tokens) {
          std::printf("  %-10s r=%.1f: skipped (just in time is O(n^2); --jit-max-tokens %lld)\n",
                      mode.name, r, (long long)jit_max_tokens);
          continue;
        }
        CompressedCache cache(g, B, parameters(mode.codebook, r), artifact, g_device);
        const double t0 = timed([&] { cache.prefill(0, 0, keys, values, window_att); });
        if (compress_seconds.size() <= this_config) compress_seconds.resize(this_config + 1, 0);
        if (compress_seconds[this_config] == 0) compress_seconds[this_config] = t0;
        if (t0 * B > max_seconds && B > 1) {
          std::printf("  %-10s r=%.1f: skipped (compressing %lld sequences would take ~%.0f s)\n",
                      mode.name, r, (long long)B, t0 * B);
          continue;
        }
        if (first_batch) {  // the prefill's calls, counted on a cache of its own
          CompressedCache probe(g, 1, parameters(mode.codebook, r), artifact, g_device);
          ScopeCalls calls;
          probe.prefill(0, 0, keys, values, window_att);
          std::printf("  %-10s r=%.1f: prefill ATen calls %lld, of which read-backs %lld\n",
                      mode.name, r, (long long)calls["spindlekv::prefill"],
                      (long long)calls.read_backs("spindlekv::prefill"));
          if (g_call_names) {
            std::printf("  %-10s r=%.1f: prefill calls: %s\n", mode.name, r,
                        calls.names("spindlekv::prefill").c_str());
          }
        }
        for (int64_t b = 1; b < B; ++b) cache.prefill(b, 0, keys, values, window_att);
        at::Tensor host_pos = at::empty({B, 1}, at::kLong);
        auto step = [&](int64_t s) {
          host_pos.fill_(T + s);
          cache.append_and_attend(0, qs[s].narrow(0, 0, B), ks[s].narrow(0, 0, B),
                                  vs[s].narrow(0, 0, B), host_pos);
          cache.advance(1);
        };
        step(0);  // warm-up (the first step allocates the growth buffers)
        const double t_step = timed([&] {
                                for (int64_t s = 1; s < steps; ++s) step(s);
                              }) /
                              (steps - 1);
        int64_t append_calls = 0, attend_calls = 0;
        {
          ScopeCalls calls;
          host_pos.fill_(T + steps);  // one step more (step 0's vectors), counted
          cache.append_and_attend(0, qs[0].narrow(0, 0, B), ks[0].narrow(0, 0, B),
                                  vs[0].narrow(0, 0, B), host_pos);
          cache.advance(1);
          append_calls = calls["spindlekv::decode_append"];
          attend_calls = calls["spindlekv::decode_attend"];
          if (g_call_names) {
            std::printf("  %-10s r=%.1f: append calls: %s\n  %-10s r=%.1f: attend calls: %s\n",
                        mode.name, r, calls.names("spindlekv::decode_append").c_str(), mode.name, r,
                        calls.names("spindlekv::decode_attend").c_str());
          }
        }
        const double ratio = cache.memory().ratio;
        std::printf(
            "  %-10s r=%.1f: memory ratio %.3f; decode %.3f ms/step = %.2fx dense (x (ratio + "
            "0.1) = %.2f); compression (batch 1) %.1f ms = %.1f%% of the prefill attention; "
            "ATen calls per step: append %lld, attend %lld\n",
            mode.name, r, ratio, 1e3 * t_step, t_step / t_dense, ratio + 0.1, 1e3 * t0,
            100 * t0 / t_prefill, (long long)append_calls, (long long)attend_calls);
        std::fflush(stdout);
      }
    }
  }
}

// Section 3: 4 layers end to end.
void model_bench(const std::string& dir, const std::string& hf_result, int64_t T, int64_t steps) {
  std::printf("\n== end to end: %s, %lld-token prompt ==\n", dir.c_str(), (long long)T);
  at::manual_seed(3);
  double ours_fp32 = 0, ours_bf16 = 0;
  const LlamaModel fp32 = LlamaModel::load(dir, g_device);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const LlamaModel model = fp32.to(g_device, dtype);
    const ModelConfig& c = model.config();
    at::Tensor tokens = at::randint(c.vocab_size, {1, T}, opts(at::kLong));
    const double t = timed([&] { model.forward(tokens, nullptr, nullptr, true); }, 3, 1);
    std::printf("forward %-8s: %.0f tok/s\n", at::toString(dtype), T / t);
    (dtype == at::kFloat ? ours_fp32 : ours_bf16) = T / t;
    if (dtype != at::kBFloat16) continue;
    // Greedy decode, bfloat16 weights: the plain cache against compressed ones.
    std::vector<int64_t> prompt(T);
    at::Tensor host_tokens = tokens.to(at::kCPU);
    for (int64_t i = 0; i < T; ++i) prompt[i] = host_tokens[0][i].item<int64_t>();
    KvCache full;
    at::Tensor next = model.forward(tokens, &full, nullptr, true).view({1, -1}).argmax(-1);
    model.forward(next.view({1, 1}), &full, nullptr, true);  // warm-up step
    const double t_full =
        timed([&] {
          for (int64_t s = 0; s < steps; ++s) {
            // The host reads each token and feeds it back, as decoding does.
            const at::Tensor id = at::full({1, 1}, next.item<int64_t>(), at::kLong);
            next = model.forward(id, &full, nullptr, true).view({1, -1}).argmax(-1);
          }
        }) /
        steps;
    std::printf("decode, full cache (bf16): %.2f ms/step\n", 1e3 * t_full);
    auto artifact = synthetic_artifact(c.geometry(), 1024, 2);
    for (double r : {1.0, 0.2}) {
      for (const Mode& mode : kModes) {
        if (r >= 1 && mode.codebook != CodebookMode::kNone) continue;
        CompressedCache cache(c.geometry(), 1, parameters(mode.codebook, r), artifact, g_device);
        double t_compress = timed([&] {
          at::Tensor logits = prefill_compressed(model, prompt, cache, 0);
          next = logits.view({1, -1}).argmax(-1);
        });
        const double t_step =
            timed([&] {
              for (int64_t s = 0; s < steps; ++s) {
                const at::Tensor id = at::full({1, 1}, next.item<int64_t>(), at::kLong);
                next = model.forward_with_cache(id, cache, true).view({1, -1}).argmax(-1);
              }
            }) /
            steps;
        std::printf(
            "decode, compressed %-10s r=%.1f: %.2f ms/step = %.2fx the full cache (target <= "
            "1.1x); memory ratio %.3f; prefill + compression %.2f s\n",
            r >= 1 ? "(all kept)" : mode.name, r, 1e3 * t_step, t_step / t_full,
            cache.memory().ratio, t_compress);
      }
    }
  }
  if (!hf_result.empty()) {
    std::ifstream in(hf_result);
    if (!in) {
      std::printf("no %s: transformers' numbers missing\n", hf_result.c_str());
      return;
    }
    nlohmann::json hf = nlohmann::json::parse(in);
    const double hf_bf16 = hf.value("forward_bf16_tok_s", 0.0);
    const double hf_fp32 = hf.value("forward_fp32_tok_s", 0.0);
    std::printf(
        "transformers %s (same GPU, same job): forward float32 %.0f tok/s, bfloat16 %.0f tok/s, "
        "decode bf16 %.2f ms/step\n",
        hf.value("version", std::string("?")).c_str(), hf_fp32, hf_bf16,
        hf.value("decode_bf16_ms", 0.0));
    std::printf("ours / transformers: float32 %.2fx, bfloat16 %.2fx (target >= 0.9x)\n",
                ours_fp32 / hf_fp32, ours_bf16 / hf_bf16);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cuda", model, hf_result;
  std::vector<double> tokens = {8192, 32768, 131072}, batches = {1, 16}, ratios = {0.1, 0.2};
  int64_t steps = 20, e2e_tokens = 8192, jit_max_tokens = 32768;
  double max_seconds = 30;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const std::string v = argv[i + 1];
    if (a == "--device")
      device = v;
    else if (a == "--tokens")
      tokens = parse_list(v);
    else if (a == "--batch")
      batches = parse_list(v);
    else if (a == "--ratios")
      ratios = parse_list(v);
    else if (a == "--steps")
      steps = std::max<int64_t>(2, std::atoll(v.c_str()));
    else if (a == "--max-seconds")
      max_seconds = std::atof(v.c_str());
    else if (a == "--model")
      model = v;
    else if (a == "--hf-result")
      hf_result = v;
    else if (a == "--jit-max-tokens")
      jit_max_tokens = std::atoll(v.c_str());
    else if (a == "--e2e-tokens")
      e2e_tokens = std::atoll(v.c_str());
    else if (a == "--call-names")
      g_call_names = v == "1";
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    g_device = parse_device(device, "--device");
    configure_threads(0);
    c10::InferenceMode guard;
    at::manual_seed(0);
    std::printf("gpu_bench on %s, LibTorch %d.%d, %s\n", device.c_str(), TORCH_VERSION_MAJOR,
                TORCH_VERSION_MINOR, kHasSdpa ? "scaled_dot_product_attention" : "no SDPA");
    for (double T : tokens)
      layer_bench(static_cast<int64_t>(T), batches, ratios, steps, max_seconds, jit_max_tokens);
    if (!model.empty()) model_bench(model, hf_result, e2e_tokens, steps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
