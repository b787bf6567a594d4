#include "model/llama_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/rope.h"
#include "core/safetensors_writer.h"
#include "model/attention.h"
#include "runtime/attention_cache.h"

namespace spindlekv {

c10::ScalarType parse_model_dtype(const std::string& name, const std::string& what) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  SKV_THROW(kInvalidInput, what, " '", name, "' is not a model dtype (allowed: float32, ",
            "bfloat16, float16)");
}

c10::Device parse_device(const std::string& name, const std::string& what) {
  std::optional<c10::Device> device;
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {  // not a device name: refused below
  }
  SKV_CHECK(device && (device->is_cpu() || device->is_cuda()), what, " '", name,
            "' is not a device (allowed: cpu, cuda, cuda:N)");
  SKV_CHECK(!device->is_cuda() || at::hasCUDA(), what, " '", name,
            "': this build of LibTorch has no CUDA (build against a CUDA LibTorch)");
  return *device;
}

const char* model_dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      return "unsupported";
  }
}

namespace fs = std::filesystem;

int64_t KvCache::size(int64_t layer) const {
  if (layer >= static_cast<int64_t>(layers.size()) || !layers[layer].keys.defined()) return 0;
  return layers[layer].keys.size(2);
}

bool ForwardCapture::wants(int64_t layer) const {
  return layers.empty() || std::find(layers.begin(), layers.end(), layer) != layers.end();
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (x.scalar_type() == at::kFloat) {
    return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight;
  }
  const at::Tensor xf = x.to(at::kFloat);  // as Hugging Face: normalise in float32
  return (xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps)).to(x.scalar_type()) * weight;
}

namespace {

std::string layer_name(int64_t i, const char* rest) {
  return "model.layers." + std::to_string(i) + "." + rest;
}

at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

void check_finite(const at::Tensor& t, const std::string& name, const std::string& dir) {
  if (!at::isfinite(t).all().item<bool>()) {
    SKV_THROW(kInvalidInput, "checkpoint '", dir, "': tensor '", name,
              "' contains NaN or Inf values");
  }
}

}  // namespace

LlamaModel::LlamaModel(ModelConfig config, ModelWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  config_.validate();
  SKV_CHECK_EQ(static_cast<int64_t>(weights_.layers.size()), config_.num_layers,
               "weights have the wrong number of layers");
  inv_freq_ = rope_inverse_frequencies(config_.rope, config_.head_dim);
}

LlamaModel LlamaModel::load(const std::string& model_dir, c10::Device device,
                            c10::ScalarType dtype) {
  SKV_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
            "model dtype must be float32, bfloat16 or float16, got ", at::toString(dtype));
  return with_context("loading model '" + model_dir + "'", [&] {
    ModelConfig c = load_model_config(model_dir);
    Checkpoint ckpt(model_dir);
    const int64_t H = c.hidden_size, I = c.intermediate_size, d = c.head_dim;
    const int64_t qo = c.num_heads * d, kvo = c.num_kv_heads * d;
    auto get = [&](const std::string& name, std::vector<int64_t> shape) {
      at::Tensor t = ckpt.get_float(name, shape);
      check_finite(t, name, model_dir);
      return t.to(device, dtype);
    };
    ModelWeights w;
    w.embed_tokens = get("model.embed_tokens.weight", {c.vocab_size, H});
    for (int64_t i = 0; i < c.num_layers; ++i) {
      LayerWeights L;
      L.q_proj = get(layer_name(i, "self_attn.q_proj.weight"), {qo, H});
      L.k_proj = get(layer_name(i, "self_attn.k_proj.weight"), {kvo, H});
      L.v_proj = get(layer_name(i, "self_attn.v_proj.weight"), {kvo, H});
      L.o_proj = get(layer_name(i, "self_attn.o_proj.weight"), {H, qo});
      if (c.attention_bias) {
        L.q_bias = get(layer_name(i, "self_attn.q_proj.bias"), {qo});
        L.k_bias = get(layer_name(i, "self_attn.k_proj.bias"), {kvo});
        L.v_bias = get(layer_name(i, "self_attn.v_proj.bias"), {kvo});
      }
      L.gate_proj = get(layer_name(i, "mlp.gate_proj.weight"), {I, H});
      L.up_proj = get(layer_name(i, "mlp.up_proj.weight"), {I, H});
      L.down_proj = get(layer_name(i, "mlp.down_proj.weight"), {H, I});
      L.input_norm = get(layer_name(i, "input_layernorm.weight"), {H});
      L.post_attention_norm = get(layer_name(i, "post_attention_layernorm.weight"), {H});
      w.layers.push_back(std::move(L));
    }
    w.final_norm = get("model.norm.weight", {H});
    if (c.tie_word_embeddings || !ckpt.contains("lm_head.weight")) {
      // Some tied checkpoints still carry lm_head; untied ones must have it.
      SKV_CHECK(c.tie_word_embeddings, "tensor 'lm_head.weight' is missing and ",
                "config.json does not set tie_word_embeddings");
      w.lm_head = w.embed_tokens;
    } else {
      w.lm_head = get("lm_head.weight", {c.vocab_size, H});
    }
    return LlamaModel(std::move(c), std::move(w));
  });
}

LlamaModel LlamaModel::random(const ModelConfig& c, uint64_t seed, double init_std) {
  c.validate();
  at::Generator gen = at::detail::createCPUGenerator(seed);
  auto normal = [&](std::vector<int64_t> shape) {
    return at::normal(0.0, init_std, shape, gen, at::TensorOptions().dtype(at::kFloat));
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size, d = c.head_dim;
  const int64_t qo = c.num_heads * d, kvo = c.num_kv_heads * d;
  ModelWeights w;
  w.embed_tokens = normal({c.vocab_size, H});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerWeights L;
    L.q_proj = normal({qo, H});
    L.k_proj = normal({kvo, H});
    L.v_proj = normal({kvo, H});
    L.o_proj = normal({H, qo});
    if (c.attention_bias) {
      L.q_bias = normal({qo});
      L.k_bias = normal({kvo});
      L.v_bias = normal({kvo});
    }
    L.gate_proj = normal({I, H});
    L.up_proj = normal({I, H});
    L.down_proj = normal({H, I});
    L.input_norm = at::ones({H});
    L.post_attention_norm = at::ones({H});
    w.layers.push_back(std::move(L));
  }
  w.final_norm = at::ones({H});
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : normal({c.vocab_size, H});
  return LlamaModel(c, std::move(w));
}

c10::Device LlamaModel::device() const { return weights_.embed_tokens.device(); }

c10::ScalarType LlamaModel::dtype() const { return weights_.embed_tokens.scalar_type(); }

LlamaModel LlamaModel::to(c10::Device device) const { return to(device, dtype()); }

LlamaModel LlamaModel::to(c10::Device device, c10::ScalarType dtype) const {
  SKV_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
            "model dtype must be float32, bfloat16 or float16, got ", at::toString(dtype));
  auto move = [&](const at::Tensor& t) {
    return t.defined() ? t.to(t.options().device(device).dtype(dtype), /*non_blocking=*/false,
                              /*copy=*/true)
                       : t;
  };
  ModelWeights w;
  w.embed_tokens = move(weights_.embed_tokens);
  for (const LayerWeights& L : weights_.layers) {
    w.layers.push_back({move(L.q_proj), move(L.k_proj), move(L.v_proj), move(L.o_proj),
                        move(L.q_bias), move(L.k_bias), move(L.v_bias), move(L.gate_proj),
                        move(L.up_proj), move(L.down_proj), move(L.input_norm),
                        move(L.post_attention_norm)});
  }
  w.final_norm = move(weights_.final_norm);
  w.lm_head =
      weights_.lm_head.is_same(weights_.embed_tokens) ? w.embed_tokens : move(weights_.lm_head);
  return LlamaModel(config_, std::move(w));
}

std::vector<std::pair<std::string, at::Tensor>> LlamaModel::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", weights_.embed_tokens);
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    const LayerWeights& L = weights_.layers[i];
    out.emplace_back(layer_name(i, "self_attn.q_proj.weight"), L.q_proj);
    out.emplace_back(layer_name(i, "self_attn.k_proj.weight"), L.k_proj);
    out.emplace_back(layer_name(i, "self_attn.v_proj.weight"), L.v_proj);
    out.emplace_back(layer_name(i, "self_attn.o_proj.weight"), L.o_proj);
    if (config_.attention_bias) {
      out.emplace_back(layer_name(i, "self_attn.q_proj.bias"), L.q_bias);
      out.emplace_back(layer_name(i, "self_attn.k_proj.bias"), L.k_bias);
      out.emplace_back(layer_name(i, "self_attn.v_proj.bias"), L.v_bias);
    }
    out.emplace_back(layer_name(i, "mlp.gate_proj.weight"), L.gate_proj);
    out.emplace_back(layer_name(i, "mlp.up_proj.weight"), L.up_proj);
    out.emplace_back(layer_name(i, "mlp.down_proj.weight"), L.down_proj);
    out.emplace_back(layer_name(i, "input_layernorm.weight"), L.input_norm);
    out.emplace_back(layer_name(i, "post_attention_layernorm.weight"), L.post_attention_norm);
  }
  out.emplace_back("model.norm.weight", weights_.final_norm);
  if (!config_.tie_word_embeddings) out.emplace_back("lm_head.weight", weights_.lm_head);
  return out;
}

int64_t LlamaModel::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : named_parameters()) n += p.second.numel();
  return n;
}

void LlamaModel::save(const std::string& dir, c10::ScalarType dtype) const {
  with_context("saving model to '" + dir + "'", [&] {
    SKV_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "unsupported storage dtype ", at::toString(dtype));
    fs::create_directories(dir);
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& [name, t] : named_parameters()) {
      tensors.emplace_back(name, t.detach().to(at::kCPU).to(dtype));
    }
    ModelConfig c = config_;
    c.torch_dtype = model_dtype_name(dtype);
    write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
    write_file_atomically((fs::path(dir) / "config.json").string(), model_config_to_json(c));
  });
}

at::Tensor LlamaModel::layer_forward(int64_t index, const at::Tensor& x,
                                     const at::Tensor& q_positions, const at::Tensor& cos,
                                     const at::Tensor& sin, KvCache* cache,
                                     ForwardCapture* capture) const {
  const LayerWeights& L = weights_.layers[index];
  const ModelConfig& c = config_;
  const int64_t B = x.size(0), T = x.size(1), d = c.head_dim;

  at::Tensor h = rms_norm(x, L.input_norm, c.rms_norm_eps);
  at::Tensor q = project(h, L.q_proj, L.q_bias).view({B, T, c.num_heads, d}).transpose(1, 2);
  at::Tensor k = project(h, L.k_proj, L.k_bias).view({B, T, c.num_kv_heads, d}).transpose(1, 2);
  at::Tensor v = project(h, L.v_proj, L.v_bias).view({B, T, c.num_kv_heads, d}).transpose(1, 2);
  const RopeTables tables{cos, sin};
  at::Tensor q_rot = apply_rope(q, tables);
  at::Tensor k_rot = apply_rope(k, tables);

  at::Tensor keys = k_rot, values = v, key_positions = q_positions;
  if (cache != nullptr) {
    KvCache::Layer& cl = cache->layers[index];
    if (cl.keys.defined() && cl.keys.size(2) > 0) {
      keys = at::cat({cl.keys, k_rot}, 2);
      values = at::cat({cl.values, v}, 2);
      key_positions = at::cat({cl.positions, q_positions}, 0);
    }
    cl.keys = keys;
    cl.values = values;
    cl.positions = key_positions;
  }

  const bool record = capture != nullptr && capture->wants(index);
  const int64_t rows = record ? capture->attention_rows : 0;
  AttentionResult att = grouped_query_attention(q_rot, keys, values, q_positions, key_positions,
                                                c.sliding_window, rows);
  if (record) {
    ForwardCapture::Layer& out = capture->out[index];
    if (capture->pre_rope_kv) {
      out.keys_pre_rope = k;
      out.values = v;
    }
    if (capture->post_rope_qk) {
      out.queries_post_rope = q_rot;
      out.keys_post_rope = k_rot;
    }
    out.attention = att.probabilities;
    out.key_positions = key_positions;
  }
  return finish_layer(index, x, att.output);
}

at::Tensor LlamaModel::finish_layer(int64_t index, const at::Tensor& x,
                                    const at::Tensor& att) const {
  const LayerWeights& L = weights_.layers[index];
  const ModelConfig& c = config_;
  at::Tensor o = att.transpose(1, 2).reshape({x.size(0), x.size(1), c.num_heads * c.head_dim});
  at::Tensor y = x + project(o, L.o_proj);
  at::Tensor m = rms_norm(y, L.post_attention_norm, c.rms_norm_eps);
  return y + project(at::silu(project(m, L.gate_proj)) * project(m, L.up_proj), L.down_proj);
}

at::Tensor LlamaModel::check_tokens(const at::Tensor& tokens_in) const {
  SKV_CHECK_EQ(tokens_in.dim(), 2, "tokens must be [batch, tokens]");
  SKV_CHECK_GT(tokens_in.size(1), 0, "no tokens to run");
  // Checked where the ids are: on the host without waiting, on a device
  // with one read-back of their range.
  const at::Tensor range =
      at::stack({tokens_in.min(), tokens_in.max()}).to(at::kCPU, at::kLong).contiguous();
  const int64_t vmin = range.data_ptr<int64_t>()[0], vmax = range.data_ptr<int64_t>()[1];
  SKV_CHECK(vmin >= 0 && vmax < config_.vocab_size, "token ids must lie in [0, ",
            config_.vocab_size, "), got range [", vmin, ", ", vmax, "]");
  return tokens_in.to(device(), at::kLong, /*non_blocking=*/true);
}

at::Tensor LlamaModel::forward_with_cache(const at::Tensor& tokens_in, AttentionCache& cache,
                                          bool last_logits_only) const {
  at::Tensor tokens = check_tokens(tokens_in);
  const int64_t B = tokens.size(0), T = tokens.size(1);
  const ModelConfig& c = config_;
  SKV_CHECK_EQ(B, cache.batch_size(), "tokens and cache differ in batch size");
  const c10::Device dev = device();
  std::vector<int64_t> starts(B);
  for (int64_t b = 0; b < B; ++b) {
    starts[b] = cache.next_position(b);
    SKV_CHECK_LE(starts[b] + T, c.max_position_embeddings, "sequence ", b,
                 " would pass the model's max_position_embeddings");
  }
  // Positions on the host, where the cache bounds its RoPE table without
  // waiting for the device (attention_cache.h); the model's own RoPE uses a
  // copy on the device.
  const at::Tensor host_positions =
      at::tensor(starts, at::kLong).view({B, 1}) + at::arange(T, at::kLong).view({1, T});
  const at::Tensor positions = host_positions.to(dev, at::kLong, /*non_blocking=*/true);
  RopeTables flat = rope_tables(inv_freq_.to(dev), positions.reshape({-1}));
  const RopeTables tables{flat.cos.view({B, 1, T, c.head_dim}).to(dtype()),
                          flat.sin.view({B, 1, T, c.head_dim}).to(dtype())};
  cache.observe_tokens(tokens);
  at::Tensor x = at::embedding(weights_.embed_tokens, tokens);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const LayerWeights& L = weights_.layers[i];
    at::Tensor h = rms_norm(x, L.input_norm, c.rms_norm_eps);
    at::Tensor q =
        project(h, L.q_proj, L.q_bias).view({B, T, c.num_heads, c.head_dim}).transpose(1, 2);
    at::Tensor k =
        project(h, L.k_proj, L.k_bias).view({B, T, c.num_kv_heads, c.head_dim}).transpose(1, 2);
    at::Tensor v =
        project(h, L.v_proj, L.v_bias).view({B, T, c.num_kv_heads, c.head_dim}).transpose(1, 2);
    at::Tensor o = cache.append_and_attend(i, apply_rope(q, tables), k, v, host_positions);
    x = finish_layer(i, x, o.to(x.scalar_type()));
  }
  cache.advance(T);
  if (last_logits_only) x = x.narrow(1, T - 1, 1);
  x = rms_norm(x, weights_.final_norm, c.rms_norm_eps);
  return at::linear(x, weights_.lm_head);
}

std::pair<at::Tensor, at::Tensor> LlamaModel::token_kv_table(int64_t layer) const {
  SKV_CHECK(layer == 0, "layer ", layer, "'s keys and values depend on the tokens before it; ",
            "only layer 0 has a table by token id");
  const ModelConfig& c = config_;
  const LayerWeights& L = weights_.layers[0];
  // As in the forward pass: the same operations on a [1, vocab, hidden] batch.
  at::Tensor ids = at::arange(c.vocab_size, at::TensorOptions().dtype(at::kLong).device(device()));
  at::Tensor x = at::embedding(weights_.embed_tokens, ids.view({1, -1}));
  at::Tensor h = rms_norm(x, L.input_norm, c.rms_norm_eps);
  at::Tensor k = project(h, L.k_proj, L.k_bias).view({c.vocab_size, c.num_kv_heads, c.head_dim});
  at::Tensor v = project(h, L.v_proj, L.v_bias).view({c.vocab_size, c.num_kv_heads, c.head_dim});
  return {k, v};
}

at::Tensor LlamaModel::forward(const at::Tensor& tokens_in, KvCache* cache, ForwardCapture* capture,
                               bool last_logits_only) const {
  const c10::Device dev = device();
  at::Tensor tokens = check_tokens(tokens_in);
  const int64_t T = tokens.size(1);

  int64_t start = 0;
  if (cache != nullptr) {
    if (cache->layers.empty()) cache->layers.resize(config_.num_layers);
    SKV_CHECK_EQ(static_cast<int64_t>(cache->layers.size()), config_.num_layers,
                 "cache was made for a model with another layer count");
    start = cache->next_position;
  }
  SKV_CHECK_LE(start + T, config_.max_position_embeddings,
               "sequence longer than the model's max_position_embeddings");
  if (capture != nullptr) {
    capture->out.assign(config_.num_layers, {});
    for (int64_t l : capture->layers) {
      SKV_CHECK(l >= 0 && l < config_.num_layers, "capture layer ", l, " out of range [0, ",
                config_.num_layers, ")");
    }
  }
  at::Tensor positions =
      at::arange(start, start + T, at::TensorOptions().dtype(at::kLong).device(dev));
  RopeTables tables = rope_tables(inv_freq_.to(dev), positions);
  tables.cos = tables.cos.to(dtype());  // as Hugging Face: RoPE in the model's dtype
  tables.sin = tables.sin.to(dtype());

  at::Tensor x = at::embedding(weights_.embed_tokens, tokens);
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    x = layer_forward(i, x, positions, tables.cos, tables.sin, cache, capture);
  }
  if (cache != nullptr) cache->next_position = start + T;
  if (last_logits_only) x = x.narrow(1, T - 1, 1);
  x = rms_norm(x, weights_.final_norm, config_.rms_norm_eps);
  return at::linear(x, weights_.lm_head);
}

std::vector<int64_t> LlamaModel::generate_greedy(const std::vector<int64_t>& prompt,
                                                 int64_t max_new,
                                                 std::optional<int64_t> eos_id) const {
  SKV_CHECK(!prompt.empty(), "empty prompt");
  KvCache cache;
  at::Tensor input = at::tensor(prompt, at::kLong).view({1, -1});
  std::vector<int64_t> out;
  for (int64_t step = 0; step < max_new; ++step) {
    if (cache.next_position + input.size(1) > config_.max_position_embeddings) break;
    at::Tensor logits = forward(input, &cache, nullptr, /*last_logits_only=*/true);
    const int64_t next = logits.view({-1}).argmax().item<int64_t>();
    out.push_back(next);
    if (eos_id && next == *eos_id) break;
    input = at::full({1, 1}, next, at::kLong);
  }
  return out;
}

}  // namespace spindlekv
