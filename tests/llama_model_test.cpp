#include "model/llama_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/rope.h"
#include "core/safetensors_writer.h"
#include "model/attention.h"
#include "test_util.h"

namespace spindlekv {
namespace {

using Vec = std::vector<double>;
using testutil::tiny_config;

// ---- an independent reference: plain loops in double precision ----------

Vec row(const at::Tensor& m, int64_t r) {
  at::Tensor x = m[r].to(at::kDouble).contiguous();
  return Vec(x.data_ptr<double>(), x.data_ptr<double>() + x.numel());
}

Vec matvec(const at::Tensor& w, const Vec& x, const at::Tensor& bias = {}) {
  at::Tensor wd = w.to(at::kDouble).contiguous();
  auto a = wd.accessor<double, 2>();
  Vec y(w.size(0), 0.0);
  for (int64_t o = 0; o < w.size(0); ++o) {
    for (int64_t i = 0; i < w.size(1); ++i) y[o] += a[o][i] * x[i];
    if (bias.defined()) y[o] += bias[o].item<double>();
  }
  return y;
}

Vec rmsnorm_ref(const Vec& x, const at::Tensor& w, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  ms /= x.size();
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] / std::sqrt(ms + eps) * w[i].item<double>();
  return y;
}

// Explicit RoPE on one head vector at position `pos` (plain, unscaled).
Vec rope_ref(const Vec& x, int64_t pos, double theta) {
  const size_t d = x.size(), half = d / 2;
  Vec y(d);
  for (size_t i = 0; i < half; ++i) {
    const double angle = pos * std::pow(theta, -2.0 * i / d);
    y[i] = x[i] * std::cos(angle) - x[i + half] * std::sin(angle);
    y[i + half] = x[i + half] * std::cos(angle) + x[i] * std::sin(angle);
  }
  return y;
}

// Logits [T, vocab] for one sequence.
std::vector<Vec> reference_forward(const LlamaModel& model, const std::vector<int64_t>& tokens) {
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  const int64_t T = tokens.size(), d = c.head_dim, g = c.group_size();
  std::vector<Vec> x(T);
  for (int64_t t = 0; t < T; ++t) x[t] = row(w.embed_tokens, tokens[t]);
  for (const LayerWeights& L : w.layers) {
    std::vector<std::vector<Vec>> q(T), k(T), v(T);  // [t][head] -> vector
    for (int64_t t = 0; t < T; ++t) {
      Vec h = rmsnorm_ref(x[t], L.input_norm, c.rms_norm_eps);
      Vec qa = matvec(L.q_proj, h, L.q_bias), ka = matvec(L.k_proj, h, L.k_bias),
          va = matvec(L.v_proj, h, L.v_bias);
      for (int64_t hd = 0; hd < c.num_heads; ++hd) {
        q[t].push_back(
            rope_ref(Vec(qa.begin() + hd * d, qa.begin() + (hd + 1) * d), t, c.rope.theta));
      }
      for (int64_t hd = 0; hd < c.num_kv_heads; ++hd) {
        k[t].push_back(
            rope_ref(Vec(ka.begin() + hd * d, ka.begin() + (hd + 1) * d), t, c.rope.theta));
        v[t].push_back(Vec(va.begin() + hd * d, va.begin() + (hd + 1) * d));
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec attn(c.num_heads * d, 0.0);
      for (int64_t hd = 0; hd < c.num_heads; ++hd) {
        const int64_t kvh = hd / g;
        Vec scores;
        int64_t first = 0;
        if (c.sliding_window > 0) first = std::max<int64_t>(0, t - c.sliding_window + 1);
        double mx = -1e300;
        for (int64_t j = first; j <= t; ++j) {
          double s = 0;
          for (int64_t e = 0; e < d; ++e) s += q[t][hd][e] * k[j][kvh][e];
          scores.push_back(s / std::sqrt(static_cast<double>(d)));
          mx = std::max(mx, scores.back());
        }
        double z = 0;
        for (double& s : scores) z += (s = std::exp(s - mx));
        for (int64_t j = first; j <= t; ++j) {
          for (int64_t e = 0; e < d; ++e) attn[hd * d + e] += scores[j - first] / z * v[j][kvh][e];
        }
      }
      Vec o = matvec(L.o_proj, attn);
      for (size_t i = 0; i < o.size(); ++i) x[t][i] += o[i];
      Vec m = rmsnorm_ref(x[t], L.post_attention_norm, c.rms_norm_eps);
      Vec gate = matvec(L.gate_proj, m), up = matvec(L.up_proj, m);
      for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      Vec down = matvec(L.down_proj, gate);
      for (size_t i = 0; i < down.size(); ++i) x[t][i] += down[i];
    }
  }
  std::vector<Vec> logits;
  for (int64_t t = 0; t < T; ++t) {
    logits.push_back(matvec(w.lm_head, rmsnorm_ref(x[t], w.final_norm, c.rms_norm_eps)));
  }
  return logits;
}

void expect_matches_reference(const LlamaModel& model, const std::vector<int64_t>& tokens) {
  at::Tensor logits = model.forward(at::tensor(tokens, at::kLong).view({1, -1}));
  auto ref = reference_forward(model, tokens);
  ASSERT_EQ(logits.size(1), static_cast<int64_t>(tokens.size()));
  for (size_t t = 0; t < tokens.size(); ++t) {
    for (int64_t v = 0; v < model.config().vocab_size; ++v) {
      ASSERT_NEAR(logits[0][t][v].item<double>(), ref[t][v], 2e-4) << "t=" << t << " v=" << v;
    }
  }
}

const std::vector<int64_t> kTokens = {3, 17, 5, 36, 0, 9, 9, 21};

TEST(LlamaModel, ForwardMatchesLoopReferenceWithGqa) {
  expect_matches_reference(LlamaModel::random(tiny_config(4, 2), 1, 0.2), kTokens);
}

TEST(LlamaModel, ForwardMatchesLoopReferenceWithBiasesAndTiedEmbeddings) {
  ModelConfig c = tiny_config(4, 1);
  c.attention_bias = true;
  c.tie_word_embeddings = true;
  expect_matches_reference(LlamaModel::random(c, 2, 0.2), kTokens);
}

TEST(LlamaModel, ForwardMatchesLoopReferenceWithSlidingWindow) {
  ModelConfig c = tiny_config(2, 2);
  c.sliding_window = 3;
  expect_matches_reference(LlamaModel::random(c, 3, 0.2), kTokens);
}

TEST(LlamaModel, ToDeviceCopiesWeightsAndKeepsTiedEmbeddingsTied) {
  ModelConfig c = tiny_config(4, 1);
  c.attention_bias = true;
  c.tie_word_embeddings = true;
  const LlamaModel model = LlamaModel::random(c, 2, 0.2);
  const LlamaModel copy = model.to(c10::kCPU);
  EXPECT_TRUE(copy.weights().lm_head.is_same(copy.weights().embed_tokens));
  EXPECT_TRUE(copy.weights().layers[1].k_bias.defined());
  // Copies, not aliases: training the copy leaves the original alone.
  EXPECT_FALSE(copy.weights().layers[0].q_proj.is_same(model.weights().layers[0].q_proj));
  at::Tensor t = at::tensor(kTokens, at::kLong).view({1, -1});
  EXPECT_TRUE(at::equal(model.forward(t), copy.forward(t)));
}

TEST(LlamaModel, SlidingWindowChangesLogitsBeyondTheWindow) {
  ModelConfig c = tiny_config(2, 2);
  LlamaModel full = LlamaModel::random(c, 3, 0.2);
  c.sliding_window = 3;
  LlamaModel windowed(c, full.weights());
  at::Tensor t = at::tensor(kTokens, at::kLong).view({1, -1});
  at::Tensor a = full.forward(t), b = windowed.forward(t);
  EXPECT_TRUE(at::allclose(a.narrow(1, 0, 3), b.narrow(1, 0, 3), 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(a.narrow(1, 3, 5), b.narrow(1, 3, 5), 1e-3, 1e-4));
}

TEST(LlamaModel, IncrementalDecodingMatchesFullForward) {
  LlamaModel model = LlamaModel::random(tiny_config(4, 2), 4, 0.2);
  at::Tensor tokens = at::tensor(kTokens, at::kLong).view({1, -1});
  at::Tensor full = model.forward(tokens);
  KvCache cache;
  std::vector<at::Tensor> parts = {model.forward(tokens.narrow(1, 0, 5), &cache)};
  for (int64_t t = 5; t < tokens.size(1); ++t) {
    parts.push_back(model.forward(tokens.narrow(1, t, 1), &cache));
  }
  EXPECT_EQ(cache.next_position, tokens.size(1));
  EXPECT_EQ(cache.size(0), tokens.size(1));
  EXPECT_TRUE(at::allclose(at::cat(parts, 1), full, 1e-4, 1e-5));
}

TEST(LlamaModel, GqaEqualsSameModelWithKvHeadsRepeatedIntoMha) {
  ModelConfig gqa_config = tiny_config(4, 2);
  LlamaModel gqa = LlamaModel::random(gqa_config, 5, 0.2);
  ModelConfig mha_config = gqa_config;
  mha_config.num_kv_heads = gqa_config.num_heads;
  ModelWeights w = gqa.weights();
  const int64_t d = gqa_config.head_dim, g = gqa_config.group_size();
  for (LayerWeights& L : w.layers) {
    // [kv_heads*d, H] -> [kv_heads, 1, d, H] -> repeat each KV head g times.
    auto repeat = [&](const at::Tensor& p) {
      return p.view({gqa_config.num_kv_heads, 1, d, -1})
          .expand({gqa_config.num_kv_heads, g, d, p.size(1)})
          .reshape({gqa_config.num_heads * d, p.size(1)});
    };
    L.k_proj = repeat(L.k_proj);
    L.v_proj = repeat(L.v_proj);
  }
  LlamaModel mha(mha_config, w);
  at::Tensor t = at::tensor(kTokens, at::kLong).view({1, -1});
  EXPECT_TRUE(at::allclose(gqa.forward(t), mha.forward(t), 1e-5, 1e-6));
}

TEST(LlamaModel, BatchRowsAreIndependent) {
  LlamaModel model = LlamaModel::random(tiny_config(), 6, 0.2);
  at::Tensor a = at::tensor(kTokens, at::kLong).view({1, -1});
  at::Tensor b = a.flip(1);
  at::Tensor both = model.forward(at::cat({a, b}, 0));
  EXPECT_TRUE(at::allclose(both[0], model.forward(a)[0], 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(both[1], model.forward(b)[0], 1e-4, 1e-5));
}

TEST(LlamaModel, CaptureReturnsPreRopeKeysAndAttentionOfLastRows) {
  LlamaModel model = LlamaModel::random(tiny_config(4, 2), 7, 0.2);
  ForwardCapture cap;
  cap.layers = {1};
  cap.post_rope_qk = true;
  cap.attention_rows = 3;
  model.forward(at::tensor(kTokens, at::kLong).view({1, -1}), nullptr, &cap);
  ASSERT_EQ(cap.out.size(), 2u);
  EXPECT_FALSE(cap.out[0].keys_pre_rope.defined());
  const auto& L = cap.out[1];
  ASSERT_TRUE(L.keys_pre_rope.defined());
  EXPECT_EQ(L.keys_pre_rope.sizes(), (std::vector<int64_t>{1, 2, 8, 8}));
  RopeTables tables =
      rope_tables(rope_inverse_frequencies(model.config().rope, 8), at::arange(8, at::kLong));
  EXPECT_TRUE(at::allclose(apply_rope(L.keys_pre_rope, tables), L.keys_post_rope, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(unapply_rope(L.keys_post_rope, tables), L.keys_pre_rope, 1e-5, 1e-6));
  ASSERT_EQ(L.attention.sizes(), (std::vector<int64_t>{1, 4, 3, 8}));
  // Rows sum to one and a query never sees the future: row r is position 5 + r.
  EXPECT_TRUE(at::allclose(L.attention.sum(-1), at::ones({1, 4, 3}), 1e-5, 1e-6));
  EXPECT_EQ(L.attention[0][0][0][6].item<float>(), 0.0f);
  // The probabilities agree with softmax(q k^T / sqrt(d)) over grouped keys.
  at::Tensor q = L.queries_post_rope[0][3][6];  // head 3 -> kv head 1
  at::Tensor s = at::matmul(L.keys_post_rope[0][1].narrow(0, 0, 7), q) / std::sqrt(8.0);
  EXPECT_TRUE(at::allclose(at::softmax(s, 0), L.attention[0][3][1].narrow(0, 0, 7), 1e-5, 1e-6));
}

TEST(LlamaModel, BlockedAttentionEqualsUnblocked) {
  LlamaModel model = LlamaModel::random(tiny_config(), 8, 0.2);
  ForwardCapture cap;
  cap.post_rope_qk = true;
  model.forward(at::tensor(kTokens, at::kLong).view({1, -1}), nullptr, &cap);
  const auto& L = cap.out[0];
  at::Tensor pos = at::arange(8, at::kLong);
  auto whole = grouped_query_attention(L.queries_post_rope, L.keys_post_rope, L.values, pos, pos);
  auto tiny = grouped_query_attention(L.queries_post_rope, L.keys_post_rope, L.values, pos, pos, 0,
                                      0, /*max_score_bytes=*/1);
  EXPECT_TRUE(at::allclose(whole.output, tiny.output, 1e-6, 1e-7));
}

// softmax(q k^T / sqrt(d)) v over the keys each query may see, one query
// and head at a time: the reference for grouped_query_attention.
at::Tensor naive_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& qpos, const at::Tensor& kpos, int64_t window) {
  const int64_t h = q.size(1), Tq = q.size(2), d = q.size(3), group = h / k.size(1);
  at::Tensor out = at::zeros_like(q);
  for (int64_t head = 0; head < h; ++head) {
    for (int64_t i = 0; i < Tq; ++i) {
      at::Tensor visible = kpos <= qpos[i];
      if (window > 0) visible = visible & (kpos > qpos[i] - window);
      at::Tensor s = at::mv(k[0][head / group], q[0][head][i]) / std::sqrt(static_cast<double>(d));
      s = s.masked_fill(visible.logical_not(), -INFINITY);
      out[0][head][i] = at::mv(v[0][head / group].t(), at::softmax(s, 0));
    }
  }
  return out;
}

TEST(Attention, SkippingMaskedBlocksMatchesNaiveOverManyBlocks) {
  // 300 queries: three blocks of at most 128 rows, so whole key blocks are
  // skipped and the diagonal and window bands cross block boundaries.
  at::manual_seed(21);
  const int64_t T = 300;
  at::Tensor q = at::randn({1, 4, T, 8}), k = at::randn({1, 2, T, 8}), v = at::randn({1, 2, T, 8});
  at::Tensor pos = at::arange(T, at::kLong);
  for (int64_t window : {0, 50, 200}) {
    at::Tensor got = grouped_query_attention(q, k, v, pos, pos, window).output;
    EXPECT_TRUE(at::allclose(got, naive_attention(q, k, v, pos, pos, window), 1e-5, 1e-6))
        << "window " << window;
  }
  // Queries continuing a cache (positions 250-299 over keys 0-299), and keys
  // in shuffled order (no block can be skipped then).
  at::Tensor tail = q.narrow(2, 250, 50);
  at::Tensor qpos = pos.narrow(0, 250, 50);
  EXPECT_TRUE(at::allclose(grouped_query_attention(tail, k, v, qpos, pos, 30).output,
                           naive_attention(tail, k, v, qpos, pos, 30), 1e-5, 1e-6));
  at::Tensor perm = at::randperm(T, at::kLong);
  at::Tensor ks = k.index_select(2, perm), vs = v.index_select(2, perm);
  EXPECT_TRUE(at::allclose(grouped_query_attention(q, ks, vs, pos, perm).output,
                           naive_attention(q, ks, vs, pos, perm, 0), 1e-5, 1e-6));
}

// ---- RoPE variants --------------------------------------------------------

TEST(Rope, LinearScalingEqualsPlainRopeAtDividedPositions) {
  RopeParameters plain, linear;
  linear.scaling = RopeScaling::kLinear;
  linear.factor = 4.0;
  at::Tensor x = at::randn({1, 1, 3, 16});
  auto a =
      apply_rope(x, rope_tables(rope_inverse_frequencies(linear, 16), at::tensor({8L, 20L, 100L})));
  auto b =
      apply_rope(x, rope_tables(rope_inverse_frequencies(plain, 16), at::tensor({2L, 5L, 25L})));
  EXPECT_TRUE(at::allclose(a, b, 1e-5, 1e-6));
}

TEST(Rope, Llama3ScalingKeepsHighAndDividesLowFrequencies) {
  RopeParameters p;
  p.theta = 500000.0;
  p.scaling = RopeScaling::kLlama3;
  p.factor = 8.0;
  p.low_freq_factor = 1.0;
  p.high_freq_factor = 4.0;
  p.original_max_position_embeddings = 8192;
  RopeParameters plain;
  plain.theta = 500000.0;
  at::Tensor s = rope_inverse_frequencies(p, 128), f = rope_inverse_frequencies(plain, 128);
  for (int64_t i = 0; i < 64; ++i) {
    const double freq = f[i].item<double>(), wavelen = 2 * M_PI / freq;
    if (wavelen < 8192.0 / 4.0) {
      EXPECT_DOUBLE_EQ(s[i].item<double>(), freq) << i;
    } else if (wavelen > 8192.0) {
      EXPECT_DOUBLE_EQ(s[i].item<double>(), freq / 8.0) << i;
    } else {
      EXPECT_LT(s[i].item<double>(), freq) << i;
      EXPECT_GT(s[i].item<double>(), freq / 8.0) << i;
    }
  }
}

// ---- checkpoints ------------------------------------------------------------

TEST(LlamaModelLoad, Float32RoundTripIsExact) {
  testutil::TempDir dir;
  LlamaModel model = LlamaModel::random(tiny_config(), 9, 0.2);
  model.save(dir.path(), at::kFloat);
  LlamaModel back = LlamaModel::load(dir.path());
  at::Tensor t = at::tensor(kTokens, at::kLong).view({1, -1});
  EXPECT_TRUE(at::equal(model.forward(t), back.forward(t)));
}

TEST(LlamaModelLoad, DevicesParseAndUnknownOrAbsentOnesAreRefusedByOption) {
  EXPECT_EQ(parse_device("cpu"), c10::Device(c10::kCPU));
  EXPECT_SKV_ERROR(parse_device("gpu", "--device"), "--device 'gpu' is not a device");
  EXPECT_SKV_ERROR(parse_device("", "--device"), "allowed: cpu, cuda, cuda:N");
  EXPECT_SKV_ERROR(parse_device("meta"), "device 'meta' is not a device");
  if (at::hasCUDA()) {
    EXPECT_EQ(parse_device("cuda:0"), c10::Device(c10::kCUDA, 0));
  } else {
    EXPECT_SKV_ERROR(parse_device("cuda:1", "--device"),
                     "--device 'cuda:1': this build of LibTorch has no CUDA");
  }
}

TEST(LlamaModelLoad, ModelDtypeNamesRoundTripAndBadNamesAreRefused) {
  for (c10::ScalarType t : {at::kFloat, at::kBFloat16, at::kHalf}) {
    EXPECT_EQ(parse_model_dtype(model_dtype_name(t)), t);
  }
  EXPECT_SKV_ERROR(parse_model_dtype("fp16", "--dtype"), "--dtype 'fp16' is not a model dtype");
  EXPECT_SKV_ERROR(parse_model_dtype("float64"), "allowed: float32, bfloat16, float16");
}

TEST(LlamaModelLoad, LoadsInTheDtypeAskedForAndStaysCloseToFloat32) {
  testutil::TempDir dir;
  LlamaModel model = LlamaModel::random(tiny_config(), 9, 0.2);
  model.save(dir.path(), at::kFloat);
  const at::Tensor t = at::tensor(kTokens, at::kLong).view({1, -1});
  const at::Tensor reference = model.forward(t);
  const LlamaModel bf16 = LlamaModel::load(dir.path(), c10::kCPU, parse_model_dtype("bfloat16"));
  EXPECT_EQ(bf16.dtype(), at::kBFloat16);
  const at::Tensor logits = bf16.forward(t).to(at::kFloat);
  EXPECT_LT((logits - reference).abs().max().item<float>(),
            0.1f * (1 + reference.abs().max().item<float>()));
}

TEST(LlamaModelLoad, Bfloat16CheckpointLoadsAsRoundedWeights) {
  testutil::TempDir dir;
  LlamaModel model = LlamaModel::random(tiny_config(), 10, 0.2);
  model.save(dir.path(), at::kBFloat16);
  LlamaModel back = LlamaModel::load(dir.path());
  EXPECT_EQ(back.config().torch_dtype, "bfloat16");
  at::Tensor rounded = model.weights().layers[1].q_proj.to(at::kBFloat16).to(at::kFloat);
  EXPECT_TRUE(at::equal(back.weights().layers[1].q_proj, rounded));
  EXPECT_FALSE(at::equal(back.weights().layers[1].q_proj, model.weights().layers[1].q_proj));
}

// Splits a saved model into two shards with an index, as Hugging Face does.
void shard(const LlamaModel& model, const std::string& dir) {
  auto params = model.named_parameters();
  std::vector<std::pair<std::string, at::Tensor>> a, b;
  nlohmann::json index;
  for (size_t i = 0; i < params.size(); ++i) {
    auto& dst = i % 2 ? b : a;
    dst.emplace_back(params[i].first, params[i].second.to(at::kHalf));
    index["weight_map"][params[i].first] =
        i % 2 ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  write_safetensors(dir + "/model-00001-of-00002.safetensors", a);
  write_safetensors(dir + "/model-00002-of-00002.safetensors", b);
  write_file_atomically(dir + "/model.safetensors.index.json", index.dump());
  write_file_atomically(dir + "/config.json", model_config_to_json(model.config()));
}

TEST(LlamaModelLoad, ShardedFloat16CheckpointLoads) {
  testutil::TempDir dir;
  LlamaModel model = LlamaModel::random(tiny_config(), 11, 0.2);
  shard(model, dir.path());
  LlamaModel back = LlamaModel::load(dir.path());
  at::Tensor t = at::tensor(kTokens, at::kLong).view({1, -1});
  EXPECT_TRUE(at::allclose(model.forward(t), back.forward(t), 1e-2, 1e-2));
  EXPECT_TRUE(at::equal(back.weights().final_norm,
                        model.weights().final_norm.to(at::kHalf).to(at::kFloat)));
}

TEST(LlamaModelLoad, MissingShardIsNamed) {
  testutil::TempDir dir;
  shard(LlamaModel::random(tiny_config(), 12, 0.2), dir.path());
  std::filesystem::remove(dir.file("model-00002-of-00002.safetensors"));
  EXPECT_SKV_ERROR(LlamaModel::load(dir.path()), "shard 'model-00002-of-00002.safetensors'");
}

TEST(LlamaModelLoad, MissingTensorIsNamed) {
  testutil::TempDir dir;
  LlamaModel model = LlamaModel::random(tiny_config(), 13, 0.2);
  auto params = model.named_parameters();
  params.erase(
      std::remove_if(params.begin(), params.end(),
                     [](auto& p) { return p.first == "model.layers.1.mlp.up_proj.weight"; }),
      params.end());
  write_safetensors(dir.file("model.safetensors"), params);
  write_file_atomically(dir.file("config.json"), model_config_to_json(model.config()));
  EXPECT_SKV_ERROR(LlamaModel::load(dir.path()),
                   "tensor 'model.layers.1.mlp.up_proj.weight' is missing");
}

TEST(LlamaModelLoad, WrongShapeNamesBothShapes) {
  testutil::TempDir dir;
  LlamaModel model = LlamaModel::random(tiny_config(), 14, 0.2);
  model.save(dir.path(), at::kFloat);
  ModelConfig c = model.config();
  c.intermediate_size = 41;
  write_file_atomically(dir.file("config.json"), model_config_to_json(c));
  EXPECT_SKV_ERROR(LlamaModel::load(dir.path()),
                   "has shape [40, 24], config.json implies [41, 24]");
}

TEST(LlamaModelLoad, NanWeightIsRefusedWithTensorName) {
  testutil::TempDir dir;
  LlamaModel model = LlamaModel::random(tiny_config(), 15, 0.2);
  model.weights().layers[0].v_proj[0][0] = NAN;
  model.save(dir.path(), at::kFloat);
  EXPECT_SKV_ERROR(LlamaModel::load(dir.path()),
                   "'model.layers.0.self_attn.v_proj.weight' contains NaN");
}

TEST(LlamaModelLoad, TruncatedCheckpointNamesTheFile) {
  testutil::TempDir dir;
  LlamaModel::random(tiny_config(), 16, 0.2).save(dir.path(), at::kFloat);
  const std::string bytes = read_file(dir.file("model.safetensors"));
  testutil::write_bytes(dir.file("model.safetensors"), bytes.substr(0, bytes.size() / 2));
  EXPECT_SKV_ERROR(LlamaModel::load(dir.path()), "model.safetensors");
}

TEST(LlamaModelLoad, DirectoryWithoutWeightsIsExplained) {
  testutil::TempDir dir;
  write_file_atomically(dir.file("config.json"), model_config_to_json(tiny_config()));
  EXPECT_SKV_ERROR(LlamaModel::load(dir.path()), "neither model.safetensors nor");
}

TEST(LlamaModel, TokenOutOfVocabularyIsRefused) {
  LlamaModel model = LlamaModel::random(tiny_config(), 17, 0.2);
  EXPECT_SKV_ERROR(model.forward(at::tensor({1L, 37L}).view({1, -1})),
                   "token ids must lie in [0, 37)");
}

TEST(LlamaModel, SequenceLongerThanMaxPositionsIsRefused) {
  LlamaModel model = LlamaModel::random(tiny_config(), 18, 0.2);
  EXPECT_SKV_ERROR(model.forward(at::zeros({1, 129}, at::kLong)), "max_position_embeddings");
}

TEST(LlamaModel, GreedyGenerationEqualsArgmaxOfFullForward) {
  LlamaModel model = LlamaModel::random(tiny_config(), 19, 0.5);
  std::vector<int64_t> prompt = {1, 2, 3};
  std::vector<int64_t> out = model.generate_greedy(prompt, 5);
  ASSERT_EQ(out.size(), 5u);
  std::vector<int64_t> seq = prompt;
  for (int64_t t : out) {
    at::Tensor logits = model.forward(at::tensor(seq, at::kLong).view({1, -1}));
    EXPECT_EQ(logits[0][-1].argmax().item<int64_t>(), t);
    seq.push_back(t);
  }
}

}  // namespace
}  // namespace spindlekv
