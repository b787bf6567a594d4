// Row codecs (runtime/row_codec.h): the registry, the bytes each codec
// stores counted by hand, TurboQuant-style codes against the paper's
// distortion bound, llama.cpp's q8_0 / q4_0 blocks by hand, save/load of a
// cache that uses each, refusal of malformed saved data, and fp8 / KIVI
// coding exactly as they did before they moved onto the interface.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/safetensors_reader.h"
#include "core/safetensors_writer.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/cache_access.h"
#include "runtime/detail/quantized_rows.h"
#include "runtime/row_codec.h"
#include "test_util.h"

namespace spindlekv {
namespace detail {
// Defined in runtime/codecs/turboquant_codec.cpp.
const std::vector<double>& sphere_lloyd_max(int64_t dim, int64_t bits);
at::Tensor random_rotation(int64_t d, uint64_t seed);
}  // namespace detail

namespace {

using detail::QuantizedRows;

std::shared_ptr<const RowCoder> make_coder(const std::string& name, int64_t kv, int64_t d,
                                           KvSide side = KvSide::kKeys,
                                           StorageDtype dtype = StorageDtype::kFloat16) {
  return testutil::bind_row_codec(name, kv, d, side, dtype);
}

// Rows [m, d] coded and decoded by `name` (every row coded: no window).
at::Tensor round_trip(const std::string& name, const at::Tensor& x,
                      StorageDtype dtype = StorageDtype::kFloat32) {
  const int64_t d = x.size(1);
  QuantizedRows r = QuantizedRows::empty(make_coder(name, 1, d, KvSide::kKeys, dtype), dtype, 1, d,
                                         at::TensorOptions());
  r.append(0, x);
  EXPECT_EQ(r.quantized[0], x.size(0)) << name;
  return r.dequantize()[0];
}

TEST(RowCodec, RegistryParsesEveryListedNameAndRefusesOthers) {
  const std::vector<std::string> names = row_codec_names();
  for (const char* n :
       {"fp8", "fp8-calibrated", "kivi4", "kivi2", "tq2", "tq2.5", "tq3", "tq4", "q8_0", "q4_0"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  for (const std::string& n : names) {
    ASSERT_TRUE(is_row_codec_name(n)) << n;
    EXPECT_EQ(parse_row_codec(n)->name(), n);
  }
  EXPECT_EQ(parse_row_codec("none"), nullptr);
  EXPECT_FALSE(is_row_codec_name("none"));
  EXPECT_EQ(parse_row_codec("kivi2-g64-r128")->name(), "kivi2-g64-r128");
  EXPECT_EQ(parse_row_codec("tq3.5-s7")->name(), "tq3.5-s7");
  EXPECT_FALSE(is_row_codec_name("tq9"));
  EXPECT_FALSE(is_row_codec_name("kivi3"));
  EXPECT_FALSE(is_row_codec_name("q5_0"));
  EXPECT_SKV_ERROR(parse_row_codec("tq9"), "at most 8 bits");
  EXPECT_SKV_ERROR(parse_row_codec("tq3-x"), "is not s<seed>");
  EXPECT_SKV_ERROR(parse_row_codec("int4"),
                   "row codec 'int4' is unknown (known: none, fp16, bf16, fp8");
  EXPECT_SKV_ERROR(make_coder("q4_0", 1, 48), "head_dim 48 is not a multiple");
  EXPECT_SKV_ERROR(make_coder("tq2.5", 1, 7), "head_dim 7 is odd");
  // A cache refuses a codec it cannot bind, naming the layer and side.
  CompressionParameters p;
  p.codebook = CodebookMode::kNone;
  p.budget = BudgetKind::kUniform;
  p.value_codec = "q8_0";
  EXPECT_SKV_ERROR(CompressedCache(testutil::tiny_config(4, 2, 8).geometry(), 1, p),
                   "row codec 'q8_0' of layer 0 values");
}

// One layer, 2 KV heads of 64 dimensions, 20 tokens kept, float16 storage:
// every codec's exact bytes counted by hand, keys and values apart.
TEST(RowCodec, BytesPerRowMatchAHandCount) {
  ModelConfig c = testutil::tiny_config(4, 2, 64);
  c.num_layers = 1;
  at::manual_seed(2);
  const at::Tensor keys = at::randn({2, 20, 64}), values = at::randn({2, 20, 64});
  // name -> bytes of one coded row, and the shared tables of one (layer, side).
  const std::map<std::string, std::pair<int64_t, int64_t>> want = {
      {"q8_0", {64 + 2 * 2, 0}},          // 2 blocks: 32 int8 + a float16 scale each
      {"q4_0", {32 + 2 * 2, 0}},          // 2 blocks: 16 bytes + a float16 scale each
      {"tq2", {16 + 2, 2 * 64 + 4 * 4}},  // 64 x 2 bits, a float16 norm; signs, 4 centroids
      {"tq2.5", {12 + 8 + 2, 2 * 64 + 4 * (8 + 4)}},  // 32 x 3 bits + 32 x 2 bits
      {"tq3", {24 + 2, 2 * 64 + 4 * 8}},
      {"tq4", {32 + 2, 2 * 64 + 4 * 16}},
  };
  for (const auto& [name, bytes] : want) {
    CompressionParameters p;
    p.reserve_ratio = 1;
    p.codebook = CodebookMode::kNone;
    p.storage_dtype = StorageDtype::kFloat16;
    p.set_codec(name);
    CompressedCache cache(c.geometry(), 1, p);
    cache.prefill(0, 0, keys, values, at::Tensor());
    const MemoryReport m = cache.memory();
    EXPECT_EQ(m.layers[0].exact_bytes, 2 * 2 * 20 * bytes.first) << name;
    EXPECT_EQ(m.held_bytes, 2 * 2 * 20 * bytes.first) << name;
    EXPECT_EQ(m.shared_bytes_total, 2 * bytes.second) << name;
    EXPECT_DOUBLE_EQ(m.ratio, (m.held_bytes + m.shared_bytes_total) / (2.0 * 2 * 20 * 64 * 2))
        << name;
    EXPECT_DOUBLE_EQ(m.ratio_shared_by(16),
                     (m.held_bytes + m.shared_bytes_total / 16.0) / (2.0 * 2 * 20 * 64 * 2))
        << name;
  }
  // Keys and values take separate codecs (llama.cpp's type_k / type_v).
  CompressionParameters p;
  p.reserve_ratio = 1;
  p.codebook = CodebookMode::kNone;
  p.key_codec = "q8_0";
  p.value_codec = "tq3";
  CompressedCache cache(c.geometry(), 1, p);
  cache.prefill(0, 0, keys, values, at::Tensor());
  EXPECT_EQ(cache.memory().layers[0].exact_bytes, 2 * 20 * 68 + 2 * 20 * 26);
  EXPECT_EQ(cache.memory().shared_bytes_total, 2 * 64 + 4 * 8);
  // A head size that is not a power of two: a dense rotation, charged in float32.
  ModelConfig odd = testutil::tiny_config(2, 1, 48);
  odd.num_layers = 1;
  p.set_codec("tq3");
  EXPECT_EQ(CompressedCache(odd.geometry(), 1, p).memory().shared_bytes_total,
            2 * (48 * 48 * 4 + 4 * 8));
}

// fp16 / bf16: rows in that dtype whatever the cache's, 2 bytes an element.
TEST(RowCodec, FloatCodecsHoldRowsInTheirDtype) {
  at::manual_seed(7);
  const at::Tensor x = at::randn({5, 64});
  for (const auto& [name, dtype] :
       {std::pair{"fp16", at::kHalf}, std::pair{"bf16", at::kBFloat16}}) {
    QuantizedRows r =
        QuantizedRows::empty(make_coder(name, 1, 64, KvSide::kValues, StorageDtype::kFloat32),
                             StorageDtype::kFloat32, 1, 64, {});
    r.append(0, x);
    EXPECT_EQ(r.held_bytes(), 5 * 64 * 2) << name;
    EXPECT_TRUE(at::equal(r.dequantize()[0], x.to(dtype).to(at::kFloat))) << name;
  }
  EXPECT_TRUE(is_row_codec_name("fp16"));
  const std::vector<std::string> listed = row_codec_names();
  EXPECT_EQ(std::find(listed.begin(), listed.end(), "fp16"), listed.end());  // not run by default
}

TEST(TurboQuant, RotationsAreOrthogonalAndCentroidsSymmetric) {
  for (int64_t d : {64, 48}) {
    const at::Tensor r = detail::random_rotation(d, 5);
    EXPECT_TRUE(at::allclose(r.matmul(r.t()), at::eye(d, at::kDouble), 0, 1e-10)) << d;
    EXPECT_TRUE(at::equal(r, detail::random_rotation(d, 5))) << d;   // the seed fixes it
    EXPECT_FALSE(at::equal(r, detail::random_rotation(d, 6))) << d;  // another seed does not
  }
  // b = 1 in high dimension: +-E|t| of N(0, 1/d), sqrt(2 / pi) / sqrt(d).
  const std::vector<double>& one = detail::sphere_lloyd_max(1024, 1);
  ASSERT_EQ(one.size(), 2u);
  EXPECT_NEAR(one[1], std::sqrt(2 / M_PI) / 32, 2e-4);
  EXPECT_NEAR(one[0], -one[1], 1e-12);
  const std::vector<double>& three = detail::sphere_lloyd_max(64, 3);
  ASSERT_EQ(three.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_NEAR(three[i], -three[7 - i], 1e-9);
    if (i > 0) EXPECT_GT(three[i], three[i - 1]);
  }
}

// Unit vectors: the mean squared error per vector is within the paper's
// bound sqrt(3) pi / 2 * 4^-b, and near the Lloyd-Max error of a Gaussian
// coordinate (0.3634, 0.1175, 0.03454, 0.009497: the paper's 0.36, 0.117,
// 0.03, 0.009), which the sphere's lighter tails can only improve on.
TEST(TurboQuant, UnitVectorErrorIsWithinThePapersBound) {
  const std::map<std::string, double> gaussian = {{"tq1", 0.3634},
                                                  {"tq2", 0.1175},
                                                  {"tq3", 0.03454},
                                                  {"tq4", 0.009497},
                                                  {"tq2.5", (0.1175 + 0.03454) / 2}};
  at::manual_seed(3);
  for (int64_t d : {32, 64, 128}) {
    at::Tensor u = at::randn({3000, d});
    u = u / u.norm(2, {1}, true);
    for (const auto& [name, lm] : gaussian) {
      const at::Tensor back = round_trip(name, u);
      const double mse = (back - u).pow(2).sum(1).mean().item<double>();
      const double b = name == "tq2.5" ? 2.5 : std::stod(name.substr(2));
      RecordProperty(name + "_d" + std::to_string(d) + "_mse", std::to_string(mse));
      EXPECT_LE(mse, std::sqrt(3.0) * M_PI / 2 * std::pow(4.0, -b)) << name << " d " << d;
      EXPECT_LE(mse, lm * 1.03) << name << " d " << d;
      EXPECT_GE(mse, lm * 0.85) << name << " d " << d;  // it does quantise
    }
  }
  // The norm is kept apart: a scaled vector decodes to the scaled direction
  // (within float16's rounding of the norm), and zero stays zero.
  at::Tensor x = at::randn({2, 64});
  x[1].zero_();
  x[0] *= 40;
  const at::Tensor back = round_trip("tq4", x, StorageDtype::kFloat16);
  const at::Tensor unit = round_trip("tq4", x / x.norm(2, {1}, true).clamp_min(1e-30));
  EXPECT_TRUE(at::allclose(back[0], unit[0] * x[0].norm(), 1e-3, 1e-3));
  EXPECT_EQ(back[1].abs().sum().item<double>(), 0.0);
}

// llama.cpp's quantize_row_q8_0_ref on one block by hand: d = max|x| / 127 =
// 1, codes roundf(x / d): halves away from zero (62.5 -> 63, not 62).
// The host's one-pass decoding (bit streams read directly, the Hadamard
// rotation as butterflies) against the codec's tensor decoding, bit for bit,
// with heads of different row counts (the padding stays zero); and the
// butterflies against the rotation's own matrix product.
TEST(TurboQuant, HostDecodingEqualsTheTensorDecodingBitForBit) {
  for (const char* name : {"tq2", "tq2.5", "tq3", "tq4"}) {
    for (int64_t d : {32, 64, 128}) {
      for (StorageDtype dtype : {StorageDtype::kFloat16, StorageDtype::kFloat32}) {
        const std::string what = std::string(name) + " d " + std::to_string(d);
        QuantizedRows r = QuantizedRows::empty(make_coder(name, 2, d, KvSide::kValues, dtype),
                                               dtype, 2, d, at::TensorOptions());
        at::manual_seed(5);
        r.append(0, at::randn({70, d}) * 2);
        r.append(1, at::randn({33, d}));
        const at::Tensor got = r.dequantize();  // the host path on the CPU
        const int64_t m = std::min(r.quantized[0], r.quantized[1]);
        const at::Tensor want = r.coder->decode(
            {r.field("packed").narrow(1, 0, m), r.field("norm").narrow(1, 0, m)}, m);
        EXPECT_TRUE(at::equal(got.narrow(1, 0, m), want)) << what;
        const at::Tensor rest = r.coder->decode(
            {r.field("packed").narrow(1, 0, 70), r.field("norm").narrow(1, 0, 70)}, 70);
        EXPECT_TRUE(at::equal(got[0], rest[0])) << what;
        EXPECT_EQ(got[1].narrow(0, 33, 70 - 33).abs().sum().item<float>(), 0.0f) << what;
        // The butterflies are the rotation's product: the rows' norms come back
        // and the decoded rows stay near the inputs.
        at::manual_seed(5);
        const at::Tensor x0 = at::randn({70, d}) * 2;
        const double rel = ((got[0] - x0).norm() / x0.norm()).item<double>();
        EXPECT_LT(rel, std::string(name) == "tq2" ? 0.45 : 0.35) << what;
      }
    }
  }
}

TEST(GgmlQuants, Q8_0BlockMatchesLlamaCppByHand) {
  std::vector<float> x(32, 0.0f);
  const std::vector<float> head = {127, 62.5, -62.5, 0.5, -0.5, 1.5, -127, 3.25};
  std::copy(head.begin(), head.end(), x.begin());
  QuantizedRows r = QuantizedRows::empty(make_coder("q8_0", 1, 32), StorageDtype::kFloat16, 1, 32,
                                         at::TensorOptions());
  r.append(0, at::tensor(x).view({1, 32}));
  const at::Tensor codes = r.field("packed")[0][0].view(at::kChar);
  const std::vector<int> want = {127, 63, -63, 1, -1, 2, -127, 3};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(codes[i].item<int>(), want[i]) << i;
  EXPECT_EQ(codes.narrow(0, 8, 24).abs().sum().item<int>(), 0);
  EXPECT_EQ(r.field("scale")[0][0][0].item<float>(), 1.0f);
  const at::Tensor back = r.dequantize()[0][0];
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(back[i].item<float>(), want[i]) << i;
  // Random rows: within half a step of each block's scale (and its float16 rounding).
  at::manual_seed(4);
  const at::Tensor y = at::randn({50, 64}) * 3;
  const at::Tensor err = (round_trip("q8_0", y) - y).abs().view({50, 2, 32});
  const at::Tensor step = std::get<0>(y.abs().view({50, 2, 32}).max(-1)) / 127;
  EXPECT_TRUE((err <= step.unsqueeze(-1) * (0.5 + 127.0 / 1024)).all().item<bool>());
}

// quantize_row_q4_0_ref by hand: max is the first value of largest
// magnitude with its sign, d = max / -8, codes min(15, trunc(x / d + 8.5)),
// value j in the low nibble of byte j and value j + 16 in its high nibble.
TEST(GgmlQuants, Q4_0BlockMatchesLlamaCppByHand) {
  std::vector<float> x(32, 0.0f);
  x[0] = -8;   // the max: d = 1
  x[1] = 7.9;  // trunc(16.4) -> clamped to 15
  x[2] = -3.2;
  x[3] = -0.5;  // trunc(8.0) = 8
  x[16] = 7;
  x[17] = 0.49;  // trunc(8.99) = 8
  QuantizedRows r = QuantizedRows::empty(make_coder("q4_0", 1, 32), StorageDtype::kFloat16, 1, 32,
                                         at::TensorOptions());
  r.append(0, at::tensor(x).view({1, 32}));
  const at::Tensor packed = r.field("packed")[0][0].to(at::kInt);
  ASSERT_EQ(packed.size(0), 16);
  EXPECT_EQ(packed[0].item<int>(), 0 | (15 << 4));  // x[0] -> 0, x[16] -> 15
  EXPECT_EQ(packed[1].item<int>(), 15 | (8 << 4));  // x[1] -> 15, x[17] -> 8
  EXPECT_EQ(packed[2].item<int>(), 5 | (8 << 4));   // x[2] -> 5, x[18] = 0 -> 8
  EXPECT_EQ(packed[3].item<int>(), 8 | (8 << 4));
  EXPECT_EQ(r.field("scale")[0][0][0].item<float>(), 1.0f);
  const at::Tensor back = r.dequantize()[0][0];
  EXPECT_EQ(back[0].item<float>(), -8.0f);
  EXPECT_EQ(back[1].item<float>(), 7.0f);
  EXPECT_EQ(back[2].item<float>(), -3.0f);
  EXPECT_EQ(back[16].item<float>(), 7.0f);
  // A positive max first: d = -1, and -8 can only reach -7 (code 15), as in llama.cpp.
  std::fill(x.begin(), x.end(), 0.0f);
  x[0] = 8;
  x[1] = -8;
  const at::Tensor flipped = round_trip("q4_0", at::tensor(x).view({1, 32}));
  EXPECT_EQ(flipped[0][0].item<float>(), 8.0f);
  EXPECT_EQ(flipped[0][1].item<float>(), -7.0f);
  // Random rows: within half a step (|d|, plus its float16 rounding) but for the clamp at 15.
  at::manual_seed(5);
  const at::Tensor y = at::randn({50, 64});
  const at::Tensor err = (round_trip("q4_0", y) - y).abs().view({50, 2, 32});
  const at::Tensor step = std::get<0>(y.abs().view({50, 2, 32}).max(-1)) / 8;
  EXPECT_TRUE((err <= step.unsqueeze(-1) * (1.0 + 8.0 / 1024)).all().item<bool>());
}

// A cache held by each codec, with eviction, saves and loads back with the
// same bytes and decodes the same; a saved field of the wrong dtype or
// shape, or a missing one, is refused naming the tensor.
TEST(RowCodec, SavedCacheLoadsBackAndMalformedFieldsAreRefused) {
  const ModelConfig c = testutil::tiny_config(4, 2, 32);
  for (const char* name : {"tq2.5", "tq3", "q8_0", "q4_0"}) {
    CompressionParameters p;
    p.reserve_ratio = 0.6;
    p.window = 4;
    p.codebook = CodebookMode::kNone;
    p.set_codec(name);
    CompressedCache cache(c.geometry(), 1, p);
    at::manual_seed(9);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      cache.prefill(0, l, at::randn({2, 30, 32}), at::randn({2, 30, 32}),
                    at::softmax(at::randn({4, 4, 30}), -1));
    }
    testutil::TempDir dir;
    cache.save(dir.file("c.safetensors"));
    CompressedCache loaded = CompressedCache::load(dir.file("c.safetensors"), c.geometry());
    EXPECT_EQ(loaded.parameters().key_codec, name);
    EXPECT_EQ(loaded.memory().held_bytes, cache.memory().held_bytes) << name;
    EXPECT_EQ(loaded.memory().shared_bytes_total, cache.memory().shared_bytes_total) << name;
    const at::Tensor q = at::randn({1, 4, 1, 32}), k = at::randn({1, 2, 1, 32}),
                     v = at::randn({1, 2, 1, 32}), pos = at::full({1, 1}, 30, at::kLong);
    EXPECT_TRUE(at::equal(cache.append_and_attend(1, q, k, v, pos),
                          loaded.append_and_attend(1, q, k, v, pos)))
        << name;
    // Malformed: the scale or norm in another dtype, the packed bytes one narrower, or missing.
    SafetensorsReader r(dir.file("c.safetensors"));
    const std::string side = std::string(name).rfind("tq", 0) == 0 ? "norm" : "scale";
    const std::string stat = "s0.l0.keys.quant." + side, packed = "s0.l0.values.quant.packed";
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<std::pair<std::string, at::Tensor>> tensors;
      for (const auto& t : r.tensor_names()) {
        at::Tensor x = r.tensor(t);
        if (variant == 0 && t == stat) x = x.to(at::kFloat);
        if (variant == 1 && t == packed) x = x.narrow(2, 0, x.size(2) - 1).contiguous();
        if (variant == 2 && t == stat) continue;
        tensors.emplace_back(t, x);
      }
      write_safetensors(dir.file("bad.safetensors"), tensors, r.metadata());
      EXPECT_SKV_ERROR(CompressedCache::load(dir.file("bad.safetensors"), c.geometry()),
                       "tensor '" + (variant == 1 ? packed : stat) + "' is ");
    }
  }
}

// fp8 and KIVI code exactly as before they moved onto the codec interface:
// digests (FNV-1a of the decoded float32 rows) and byte counts recorded
// from the previous implementation (KvQuantization, commit e340f76) on the
// same rows: prefill rows of two heads (77 and 40), then five decoded rows
// each. The rows are exact multiples of 1/64, so no platform's random
// numbers or libm enter.
TEST(RowCodec, Fp8AndKiviCodeAsBeforeTheMove) {
  auto rows = [](int64_t first, int64_t m, int salt) {
    std::vector<float> v(m * 64);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < 64; ++j) {
        v[i * 64 + j] =
            static_cast<float>(((first + i) * 37 + j * 91 + salt * 13) % 1001 - 500) / 64.0f;
      }
    }
    return at::tensor(v).view({m, 64});
  };
  auto fnv = [](const at::Tensor& t) {
    const at::Tensor c = t.contiguous();
    const uint8_t* p = static_cast<const uint8_t*>(c.data_ptr());
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < c.numel() * static_cast<int64_t>(c.element_size()); ++i) {
      h = (h ^ p[i]) * 1099511628211ull;
    }
    return h;
  };
  struct Golden {
    const char* codec;
    KvSide side;
    StorageDtype dtype;
    uint64_t digest;
    int64_t bytes;
  };
  const KvSide K = KvSide::kKeys, V = KvSide::kValues;
  const StorageDtype f16 = StorageDtype::kFloat16, f32 = StorageDtype::kFloat32;
  const Golden golden[] = {
      {"fp8", K, f16, 0x36a2b45f9a2f205dull, 8136},
      {"fp8", K, f32, 0x36a2b45f9a2f205dull, 8136},
      {"fp8", V, f16, 0x36a2b45f9a2f205dull, 8136},
      {"fp8", V, f32, 0x36a2b45f9a2f205dull, 8136},
      {"kivi4", K, f16, 0xffb65efef1290d18ull, 7808},
      {"kivi4", K, f32, 0xa51211e3407f4fbaull, 12544},
      {"kivi4", V, f16, 0x3c7067adfde4af27ull, 10712},
      {"kivi4", V, f32, 0xded780c92c764271ull, 19408},
      {"kivi2", K, f16, 0x6f68b0cb4261c95cull, 6272},
      {"kivi2", K, f32, 0x528549cd9bd8200full, 11008},
      {"kivi2", V, f16, 0x971fae9ec0e4d575ull, 9704},
      {"kivi2", V, f32, 0xbd4863a024569953ull, 18400},
  };
  for (const Golden& g : golden) {
    QuantizedRows r =
        QuantizedRows::empty(make_coder(g.codec, 2, 64, g.side, g.dtype), g.dtype, 2, 64, {});
    r.append(0, rows(0, 77, 1));
    r.append(1, rows(0, 40, 2));
    for (int i = 0; i < 5; ++i) {
      r.append(0, rows(77 + i, 1, 1));
      r.append(1, rows(40 + i, 1, 2));
    }
    const std::string what =
        std::string(g.codec) + " " + to_string(g.side) + " " + to_string(g.dtype);
    EXPECT_EQ(fnv(r.dequantize()), g.digest) << what;
    EXPECT_EQ(r.held_bytes(), g.bytes) << what;
  }
}

}  // namespace
}  // namespace spindlekv
