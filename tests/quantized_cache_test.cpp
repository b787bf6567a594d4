// Quantised exact rows (fp8, KIVI 4/2-bit): the number formats by hand, the
// recent-window schedule, and the cache built on them (with TurboQuant's
// codes too; the other codecs' own tests are in row_codec_test.cpp).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/safetensors_reader.h"
#include "core/safetensors_writer.h"
#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/cache_access.h"
#include "runtime/detail/compressed_cache_impl.h"
#include "runtime/detail/compressed_storage.h"
#include "runtime/detail/quantized_rows.h"
#include "test_util.h"

namespace spindlekv {
namespace {

using detail::QuantizedRows;

// A codec bound to `side` of a cache of `kv` heads of `d` dimensions.
std::shared_ptr<const RowCoder> coder(const std::string& name, KvSide side, int64_t kv, int64_t d,
                                      StorageDtype dtype = StorageDtype::kFloat32) {
  return testutil::bind_row_codec(name, kv, d, side, dtype);
}

TEST(QuantizedRows, Fp8EncodesHandComputedValues) {
  // 1 = 0 0111 000; 448 = 0 1111 110 (the largest finite); 2^-4 = 0 0011 000;
  // 2^-9 = 0 0000 001 (the smallest subnormal); -3 = 1 1000 100; 1.0625 lies halfway between
  // 1 and 1.125 and goes to the smaller; 500 saturates.
  at::Tensor x = at::tensor({0.0, 1.0, -1.0, 448.0, 500.0, 0.0625, 1.0625, 1.07, 0.001953125, -3.0},
                            at::kFloat);
  at::Tensor q = detail::fp8_e4m3_encode(x);
  std::vector<int> want = {0x00, 0x38, 0xB8, 0x7E, 0x7E, 0x18, 0x38, 0x39, 0x01, 0xC4};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(q[i].item<int>(), want[i]) << i;
  at::Tensor back = detail::fp8_e4m3_decode(q);
  std::vector<float> value = {0, 1, -1, 448, 448, 0.0625f, 1, 1.125f, 0.001953125f, -3};
  for (size_t i = 0; i < value.size(); ++i) EXPECT_EQ(back[i].item<float>(), value[i]) << i;
  // Three mantissa bits: half a step is at most 1/16 of the value (normals)
  // or 2^-10 (subnormals).
  at::manual_seed(1);
  at::Tensor r = at::randn({4096}) * 50;
  at::Tensor err = (detail::fp8_e4m3_decode(detail::fp8_e4m3_encode(r)) - r).abs();
  EXPECT_TRUE((err <= r.abs() / 16 + std::ldexp(1.0, -10)).all().item<bool>());
}

TEST(QuantizedRows, IntGroupsRoundTripWithinHalfAStep) {
  // 0..15 at 4 bits: scale 1, zero 0, every value exact.
  at::Tensor x = at::arange(16, at::kFloat).view({1, 16});
  detail::IntGroups g = detail::quantize_int(x, 4, at::kHalf);
  EXPECT_EQ(g.scale.item<float>(), 1.0f);
  EXPECT_EQ(g.zero.item<float>(), 0.0f);
  EXPECT_TRUE(at::equal(detail::dequantize_int(g.q, g.scale, g.zero), x));
  // 2 bits over [0, 3]: 1.4 -> 1, 1.6 -> 2.
  at::Tensor y = at::tensor({0.0, 3.0, 1.4, 1.6}, at::kFloat).view({1, 4});
  detail::IntGroups h = detail::quantize_int(y, 2, at::kHalf);
  EXPECT_TRUE(at::equal(h.q.view({-1}).to(at::kLong), at::tensor({0, 3, 1, 2}, at::kLong)));
  // A constant group has scale 0 and comes back exactly.
  detail::IntGroups c = detail::quantize_int(at::full({1, 8}, 2.5), 2, at::kFloat);
  EXPECT_TRUE(at::equal(detail::dequantize_int(c.q, c.scale, c.zero), at::full({1, 8}, 2.5)));
  // Random groups: within half a step (plus the float16 rounding of the
  // zero point and scale).
  at::manual_seed(2);
  at::Tensor r = at::randn({64, 32}) * 3;
  for (int64_t bits : {4, 2}) {
    detail::IntGroups s = detail::quantize_int(r, bits, at::kHalf);
    at::Tensor err = (detail::dequantize_int(s.q, s.scale, s.zero) - r).abs();
    at::Tensor bound = s.scale.to(at::kFloat).unsqueeze(1) * 0.51 + 4e-3;
    EXPECT_TRUE((err <= bound).all().item<bool>()) << bits;
  }
}

TEST(QuantizedRows, PackedCodesUnpackToTheSame) {
  at::Tensor q = at::tensor({1, 2}, at::kByte);
  EXPECT_EQ(detail::pack_bits(q, 4).item<int>(), 0x21);  // low nibble first
  at::Tensor q2 = at::tensor({1, 2, 3, 0}, at::kByte);
  EXPECT_EQ(detail::pack_bits(q2, 2).item<int>(), 1 + (2 << 2) + (3 << 4));
  for (int64_t bits : {2, 4, 8}) {
    at::Tensor r = at::randint(0, 1 << bits, {3, 5, 16}).to(at::kByte);
    at::Tensor p = detail::pack_bits(r, bits);
    EXPECT_EQ(p.size(2), 16 * bits / 8);
    EXPECT_TRUE(at::equal(detail::unpack_bits(p, bits), r)) << bits;
  }
  EXPECT_SKV_ERROR(detail::pack_bits(at::zeros({3}, at::kByte), 4), "whole bytes");
}

// KIVI's schedule: keys quantise a block of `residual` rows at a time and
// keep count mod residual; values keep the last `residual` rows.
TEST(QuantizedRows, RecentWindowFollowsKivisSchedule) {
  const at::TensorOptions o;
  QuantizedRows k = QuantizedRows::empty(coder("kivi4-g4-r8", KvSide::kKeys, 1, 4),
                                         StorageDtype::kFloat32, 1, 4, o);
  QuantizedRows v = QuantizedRows::empty(coder("kivi4-g4-r8", KvSide::kValues, 1, 4),
                                         StorageDtype::kFloat32, 1, 4, o);
  at::manual_seed(3);
  at::Tensor rows = at::randn({16, 4});
  k.append(0, rows.narrow(0, 0, 10));
  v.append(0, rows.narrow(0, 0, 10));
  EXPECT_EQ(k.quantized[0], 8);
  EXPECT_EQ(k.tail_count[0], 2);
  EXPECT_EQ(v.quantized[0], 2);
  EXPECT_EQ(v.tail_count[0], 8);
  for (int64_t i = 10; i < 16; ++i) {  // decoding: one row at a time
    k.append(0, rows.narrow(0, i, 1));
    v.append(0, rows.narrow(0, i, 1));
  }
  EXPECT_EQ(k.quantized[0], 16);  // the second block filled at row 16
  EXPECT_EQ(k.tail_count[0], 0);
  EXPECT_EQ(v.quantized[0], 8);
  EXPECT_EQ(v.tail_count[0], 8);
  // Rows keep their numbers: the tail is exact, the rest within half a step.
  at::Tensor dk = k.dequantize()[0], dv = v.dequantize()[0];
  ASSERT_EQ(dk.size(0), 16);
  EXPECT_TRUE(at::equal(dv.narrow(0, 8, 8), rows.narrow(0, 8, 8)));
  const double range = (rows.max() - rows.min()).item<double>();
  EXPECT_LE((dk - rows).abs().max().item<double>(), range / 15 / 2 + 1e-5);
  EXPECT_LE((dv - rows).abs().max().item<double>(), range / 15 / 2 + 1e-5);
  EXPECT_GT((dk - rows).abs().max().item<double>(), 0.0);  // it did quantise
  // Layouts KIVI cannot hold are refused.
  EXPECT_SKV_ERROR(coder("kivi4-g4-r6", KvSide::kKeys, 1, 4), "multiple of the group");
  EXPECT_SKV_ERROR(coder("kivi2-g4-r8", KvSide::kValues, 1, 6), "head_dim 6");
  EXPECT_SKV_ERROR(parse_row_codec("kivi4-x3"), "neither g<group> nor r<recent rows>");
}

// The CPU's one-pass dequantisation against the formulas it replaces, in
// ATen operations on the stored tensors: equal bit for bit, with heads of
// different row counts (padding stays zero) and a recent window.
TEST(QuantizedRows, CpuDequantisationEqualsTheAtenFormulasBitForBit) {
  const at::TensorOptions o;
  const int64_t kv = 2, d = 64, group = 32;
  for (const std::string mode : {"fp8", "kivi4", "kivi2"}) {
    for (KvSide axis : {KvSide::kKeys, KvSide::kValues}) {
      for (StorageDtype dtype : {StorageDtype::kFloat32, StorageDtype::kFloat16}) {
        QuantizedRows r = QuantizedRows::empty(coder(mode, axis, kv, d, dtype), dtype, kv, d, o);
        at::manual_seed(11);
        r.append(0, at::randn({150, d}) * 3);
        r.append(1, at::randn({97, d}));
        for (int64_t i = 0; i < 5; ++i) r.append(1, at::randn({1, d}));
        const at::Tensor got = r.dequantize();
        const int64_t bits = mode == "fp8" ? 8 : mode == "kivi4" ? 4 : 2;
        for (int64_t g = 0; g < kv; ++g) {
          const int64_t m = r.quantized[g];
          ASSERT_GT(m, 0);
          at::Tensor q = detail::unpack_bits(r.field("packed")[g].narrow(0, 0, m), bits);
          at::Tensor want;
          if (mode == "fp8") {
            want = detail::fp8_e4m3_decode(q) * r.field("fp8_scale")[g];
          } else if (axis == KvSide::kKeys) {
            want = detail::dequantize_int(q.view({m / group, group, d}).transpose(1, 2),
                                          r.field("scale")[g].narrow(0, 0, m / group),
                                          r.field("zero")[g].narrow(0, 0, m / group))
                       .transpose(1, 2)
                       .reshape({m, d});
          } else {
            const int64_t cg = std::min<int64_t>(group, d);
            want =
                detail::dequantize_int(q.view({m, d / cg, cg}), r.field("scale")[g].narrow(0, 0, m),
                                       r.field("zero")[g].narrow(0, 0, m))
                    .reshape({m, d});
          }
          EXPECT_TRUE(at::equal(got[g].narrow(0, 0, m), want))
              << mode << " " << to_string(axis) << " " << to_string(dtype) << " head " << g;
          const int64_t t = r.tail_count[g];
          EXPECT_TRUE(at::equal(got[g].narrow(0, m, t), r.tail[g].narrow(0, 0, t).to(at::kFloat)));
          const int64_t pad = got.size(1) - m - t;
          EXPECT_EQ(got[g].narrow(0, m + t, pad).abs().sum().item<float>(), 0.0f);
        }
      }
    }
  }
}

// Found by the long decode soak: a prefill's rows pass through the codec's
// waiting-row buffer at once, and the buffer kept that capacity after they
// were coded (5x the held bytes for kivi4 after a 2048-row prefill).
TEST(QuantizedRows, APrefillsWaitingRowsGiveTheirCapacityBackOnceCoded) {
  for (const std::string mode : {"kivi4", "tq3", "fp8"}) {
    const int64_t kv = 2, d = 64;
    QuantizedRows r =
        QuantizedRows::empty(coder(mode, KvSide::kValues, kv, d, StorageDtype::kFloat16),
                             StorageDtype::kFloat16, kv, d, at::TensorOptions());
    at::manual_seed(3);
    r.append(0, at::randn({2048, d}));
    r.append(1, at::randn({2048, d}));
    for (int64_t i = 0; i < 40; ++i) {
      r.append(0, at::randn({1, d}));
      r.append(1, at::randn({1, d}));
    }
    EXPECT_LE(r.tail.size(1), 256) << mode;
    // Doubling buffers may hold twice what is used, and a few waiting rows
    // more; before the fix the tail alone held 2048 rows a head (512 KiB).
    EXPECT_LE(r.allocated_bytes(), 2 * r.held_bytes() + (int64_t{32} << 10)) << mode;
    // The rows still decode: the waiting ones are kept as they were.
    EXPECT_EQ(r.dequantize().size(1), 2048 + 40) << mode;
  }
}

CompressionParameters quantised(const std::string& codec, StorageDtype dtype) {
  CompressionParameters p;
  p.reserve_ratio = 1;
  p.codebook = CodebookMode::kNone;
  p.set_codec(codec);
  p.storage_dtype = dtype;
  return p;
}

// A whole cache, counted by hand: 1 KV head of 8 dimensions, 20 tokens,
// nothing evicted, no codebook, float16 storage.
TEST(QuantizedCache, ByteAccountingMatchesAHandCount) {
  ModelConfig c = testutil::tiny_config(2, 1, 8);
  c.num_layers = 1;
  at::manual_seed(5);
  const at::Tensor keys = at::randn({1, 20, 8}), values = at::randn({1, 20, 8});
  {
    CompressionParameters p = quantised("kivi4-g4-r8", StorageDtype::kFloat16);
    CompressedCache cache(c.geometry(), 1, p);
    cache.prefill(0, 0, keys, values, at::Tensor());
    const LayerMemory m = cache.memory().layers[0];
    // Keys: 16 rows quantised (2 blocks of 8) at 4 bytes, 4 groups x 8
    // channels x (scale, zero) x 2 bytes, 4 rows in float16.
    const int64_t key_bytes = 16 * 4 + 4 * 8 * 2 * 2 + 4 * 8 * 2;
    // Values: 12 rows at 4 bytes, 12 rows x 2 channel groups x 2 x 2 bytes, 8 rows in float16.
    const int64_t value_bytes = 12 * 4 + 12 * 2 * 2 * 2 + 8 * 8 * 2;
    EXPECT_EQ(m.exact_bytes, key_bytes + value_bytes);
    EXPECT_EQ(m.code_bytes + m.magnitude_bytes + m.position_bytes, 0);
    EXPECT_EQ(m.full_bytes, 2 * 20 * 8 * 2);
    EXPECT_EQ(cache.memory().held_bytes, key_bytes + value_bytes);
    EXPECT_LE(m.held_bytes(), m.allocated_bytes);
  }
  {
    CompressedCache cache(c.geometry(), 1, quantised("fp8", StorageDtype::kFloat16));
    cache.prefill(0, 0, keys, values, at::Tensor());
    // 20 rows x 8 bytes and one float32 scale, for keys and for values.
    EXPECT_EQ(cache.memory().layers[0].exact_bytes, 2 * (20 * 8 + 4));
  }
  {
    CompressionParameters p = quantised("kivi2-g8-r8", StorageDtype::kFloat32);
    CompressedCache cache(c.geometry(), 1, p);
    cache.prefill(0, 0, keys, values, at::Tensor());
    // Keys: 16 rows x 2 bytes + 2 groups x 8 x 2 x 4 bytes + 4 float32 rows;
    // values: 12 rows x 2 bytes + 12 x 1 group x 2 x 4 bytes + 8 rows.
    EXPECT_EQ(cache.memory().layers[0].exact_bytes,
              (16 * 2 + 2 * 8 * 2 * 4 + 4 * 32) + (12 * 2 + 12 * 2 * 4 + 8 * 32));
  }
}

// Attention over a quantised cache is attention over its dequantised copy,
// at every decode step, across the step where a key block gets quantised.
TEST(QuantizedCache, AttentionEqualsAttentionOverTheDequantisedCopyAcrossGroups) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  for (const std::string mode : {"fp8", "kivi4", "kivi2", "tq3", "tq2.5"}) {
    const bool kivi = mode.rfind("kivi", 0) == 0;
    for (bool evict : {false, true}) {
      CompressionParameters p = quantised(kivi ? mode + "-g8-r16" : mode, StorageDtype::kFloat16);
      if (evict) {  // eviction and a just-in-time codebook over quantised exact rows
        p.reserve_ratio = 0.6;
        p.window = 4;
        p.codebook = CodebookMode::kJustInTime;
        p.key_threshold = p.value_threshold = 0.9;
      }
      CompressedCache cache(c.geometry(), 1, p);
      at::manual_seed(6);
      const int64_t T = 40;
      for (int64_t l = 0; l < c.num_layers; ++l) {
        cache.prefill(0, l, at::randn({2, T, 8}), at::randn({2, T, 8}),
                      at::softmax(at::randn({4, 4, T}), -1));
      }
      const auto& rows = detail::CacheAccess::impl(cache).sequences[0][0].keys.quant;
      const int64_t quantised_before = rows.quantized[0];
      for (int64_t step = 0; step < 20; ++step) {
        const int64_t pos = T + step;
        at::Tensor q = at::randn({1, 4, 1, 8});
        at::Tensor out =
            cache.append_and_attend(0, q, at::randn({1, 2, 1, 8}), at::randn({1, 2, 1, 8}),
                                    at::tensor({pos}, at::kLong).view({1, 1}))[0];
        cache.advance(1);
        detail::DenseLayer dense = detail::reconstruct_layer(cache, 0, 0);
        for (int64_t h = 0; h < 4; ++h) {
          const int64_t g = h / 2;
          at::Tensor scores = at::mv(dense.keys[g], q[0][h][0]) / std::sqrt(8.0);
          at::Tensor visible =
              dense.visible[h] & (dense.positions[g] >= 0) & (dense.positions[g] <= pos);
          scores = scores.masked_fill(visible.logical_not(), -INFINITY);
          at::Tensor expected = at::mv(dense.values[g].t(), at::softmax(scores, 0));
          EXPECT_TRUE(at::allclose(out[h][0], expected, 1e-5, 1e-5))
              << mode << " evict " << evict << " step " << step;
        }
      }
      if (kivi && !evict) {
        EXPECT_GT(rows.quantized[0], quantised_before) << mode;  // a block was added
      }
    }
  }
}

TEST(QuantizedCache, Fp8ScalesComeFromThePrefillOrTheArtifact) {
  ModelConfig c = testutil::tiny_config(2, 1, 8);
  c.num_layers = 1;
  at::Tensor keys = at::randn({1, 6, 8}), values = at::randn({1, 6, 8});
  keys[0][2][3] = 896.0;  // the dynamic scale: 896 / 448 = 2
  CompressedCache dynamic(c.geometry(), 1, quantised("fp8", StorageDtype::kFloat16));
  dynamic.prefill(0, 0, keys, values, at::Tensor());
  const auto& rows = detail::CacheAccess::impl(dynamic).sequences[0][0].keys.quant;
  EXPECT_FLOAT_EQ(rows.field("fp8_scale")[0].item<float>(), 2.0f);
  EXPECT_EQ(detail::reconstruct_layer(dynamic, 0, 0).values.size(1), 6);

  CompressionParameters p = quantised("fp8-calibrated", StorageDtype::kFloat16);
  auto artifact = std::make_shared<Artifact>();
  artifact->num_layers = 1;
  artifact->num_heads = 2;
  artifact->num_kv_heads = 1;
  artifact->head_dim = 8;
  ArtifactLayer L;
  L.key_codebook = at::zeros({1, 1, 8});
  L.value_codebook = at::zeros({1, 1, 8});
  L.key_sizes = L.value_sizes = {0};
  L.key_coverage = L.value_coverage = {0.0};
  artifact->layers.push_back(L);
  artifact->pyramid.context_ratios = {0.0, 1.0};
  artifact->pyramid.fractions = {{0.0}, {1.0}};
  artifact->calibrated = artifact->pyramid;
  EXPECT_SKV_ERROR(CompressedCache(c.geometry(), 1, p, artifact), "has none");
  artifact->layers[0].fp8_key_scale = at::full({1}, 0.5);  // saturates at 224
  artifact->layers[0].fp8_value_scale = at::full({1}, 1.0);
  CompressedCache calibrated(c.geometry(), 1, p, artifact);
  calibrated.prefill(0, 0, keys, values, at::Tensor());
  at::Tensor k = detail::reconstruct_layer(calibrated, 0, 0).keys;  // post-RoPE: check the norm
  EXPECT_NEAR(
      k[0][2].norm().item<double>(),
      at::cat({keys[0][2].narrow(0, 0, 3), at::full({1}, 224.0), keys[0][2].narrow(0, 4, 4)})
          .norm()
          .item<double>(),
      0.1);
  EXPECT_SKV_ERROR(parse_row_codec("int4"),
                   "known: none, fp16, bf16, fp8, fp8-calibrated, kivi<2|4>");
}

// A saved quantised cache loads back with the same rows and decodes the
// same; a file whose counts do not add up is refused.
TEST(QuantizedCache, SavedCacheLoadsBackAndDecodesTheSame) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  for (const std::string mode : {"fp8", "kivi2-g8-r8"}) {
    CompressionParameters p = quantised(mode, StorageDtype::kFloat16);
    p.reserve_ratio = 0.6;
    p.window = 4;
    CompressedCache cache(c.geometry(), 1, p);
    at::manual_seed(9);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      cache.prefill(0, l, at::randn({2, 30, 8}), at::randn({2, 30, 8}),
                    at::softmax(at::randn({4, 4, 30}), -1));
    }
    testutil::TempDir dir;
    cache.save(dir.file("c.safetensors"));
    CompressedCache loaded = CompressedCache::load(dir.file("c.safetensors"), c.geometry());
    EXPECT_EQ(loaded.parameters().key_codec, mode);
    EXPECT_EQ(loaded.parameters().value_codec, mode);
    EXPECT_EQ(loaded.memory().held_bytes, cache.memory().held_bytes);
    at::Tensor q = at::randn({1, 4, 1, 8}), k = at::randn({1, 2, 1, 8}),
               v = at::randn({1, 2, 1, 8});
    at::Tensor pos = at::full({1, 1}, 30, at::kLong);
    EXPECT_TRUE(at::equal(cache.append_and_attend(1, q, k, v, pos),
                          loaded.append_and_attend(1, q, k, v, pos)))
        << mode;
  }
  // Counts that do not add up to the exact rows.
  CompressionParameters p = quantised("kivi4", StorageDtype::kFloat16);
  CompressedCache cache(c.geometry(), 1, p);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    cache.prefill(0, l, at::randn({2, 40, 8}), at::randn({2, 40, 8}), at::Tensor());
  }
  testutil::TempDir dir;
  cache.save(dir.file("c.safetensors"));
  SafetensorsReader r(dir.file("c.safetensors"));
  std::string state = r.metadata().at("state");
  const std::string from = "\"key_quantized\":[32,32]", to = "\"key_quantized\":[32,0]";
  ASSERT_NE(state.find(from), std::string::npos) << state;
  state.replace(state.find(from), from.size(), to);
  std::map<std::string, std::string> meta = r.metadata();
  meta["state"] = state;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : r.tensor_names()) tensors.emplace_back(name, r.tensor(name));
  write_safetensors(dir.file("bad.safetensors"), tensors, meta);
  EXPECT_SKV_ERROR(CompressedCache::load(dir.file("bad.safetensors"), c.geometry()),
                   "do not fit the tables or add up");
}

}  // namespace
}  // namespace spindlekv
