// Calibrated codec plans in the runtime: the "plan<suffix>" row codec binds
// each layer and side to the codec its plan names; the artifact stores plans
// and sensitivities in one schema and refuses malformed ones.
#include "runtime/codec_plan.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/safetensors_reader.h"
#include "runtime/artifact.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/cache_access.h"
#include "runtime/detail/compressed_cache_impl.h"
#include "runtime/eviction_policy.h"
#include "test_util.h"

namespace spindlekv {
namespace {

// An artifact for testutil::tiny_config(4, 2, 8) (2 layers) with one plan.
std::shared_ptr<Artifact> planned_artifact() {
  auto a = std::make_shared<Artifact>();
  a->model_fingerprint =
      std::string(32, 'a') + ":" + std::string(32, 'b') + ":" + std::string(32, 'c');
  a->num_layers = 2;
  a->num_heads = 4;
  a->num_kv_heads = 2;
  a->head_dim = 8;
  for (int64_t l = 0; l < 2; ++l) {
    ArtifactLayer L;
    L.key_codebook = at::zeros({2, 1, 8});
    L.value_codebook = at::zeros({2, 1, 8});
    L.key_sizes = L.value_sizes = {0, 0};
    L.key_coverage = L.value_coverage = {0.0, 0.0};
    a->layers.push_back(L);
  }
  a->pyramid.context_ratios = {0.0, 1.0};
  a->pyramid.fractions = {{0.0, 0.0}, {1.0, 1.0}};
  a->calibrated = a->pyramid;
  CodecPlan p;
  p.name = "plan-t";
  p.budget_codec = "tq3";
  p.keys = {"tq2", "none"};
  p.values = {"fp8", "tq4"};
  a->codec_plans.plans = {p};
  a->codec_plans.sensitivity.candidates = {"tq2", "tq4"};
  a->codec_plans.sensitivity.row_bytes = {4.0, 6.0};
  a->codec_plans.sensitivity.keys = {{0.5, 0.1}, {0.2, 0.05}};
  a->codec_plans.sensitivity.values = {{0.3, 0.1}, {0.4, 0.0}};
  a->codec_plans.sensitivity.samples = 2;
  return a;
}

CompressedCache prefilled(const std::string& codec, std::shared_ptr<const Artifact> artifact) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  CompressionParameters p;
  p.reserve_ratio = 1.0;
  p.codebook = CodebookMode::kNone;
  p.storage_dtype = StorageDtype::kFloat16;
  p.set_codec(codec);
  CompressedCache cache(c.geometry(), 1, p, artifact);
  cache.set_policy(std::make_shared<FullCachePolicy>());
  at::manual_seed(3);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    cache.prefill(0, l, at::randn({2, 20, 8}), at::randn({2, 20, 8}), at::Tensor());
  }
  return cache;
}

TEST(CodecPlan, EachLayerAndSideIsCodedAsItsPlanSays) {
  const auto artifact = planned_artifact();
  const CompressedCache planned = prefilled("plan-t", artifact);
  const auto& I = detail::CacheAccess::impl(planned);
  ASSERT_NE(I.key_coders[0], nullptr);
  EXPECT_EQ(I.key_coders[1], nullptr);  // "none": rows in the storage dtype
  ASSERT_NE(I.value_coders[0], nullptr);
  ASSERT_NE(I.value_coders[1], nullptr);
  // Each planned layer's rows equal those of a cache coded with that codec alone.
  const std::vector<std::pair<std::string, std::string>> expected = {{"tq2", "fp8"},
                                                                     {"none", "tq4"}};
  for (int64_t l = 0; l < 2; ++l) {
    const CompressedCache key_ref = prefilled(expected[l].first, nullptr);
    const CompressedCache value_ref = prefilled(expected[l].second, nullptr);
    EXPECT_TRUE(at::equal(detail::reconstruct_layer(planned, 0, l).keys,
                          detail::reconstruct_layer(key_ref, 0, l).keys))
        << "layer " << l;
    EXPECT_TRUE(at::equal(detail::reconstruct_layer(planned, 0, l).values,
                          detail::reconstruct_layer(value_ref, 0, l).values))
        << "layer " << l;
  }
  // The bytes are the bound codecs': a layer costs half of each reference
  // cache's same layer (one codes its keys as planned, the other its values).
  const MemoryReport m = planned.memory();
  for (int64_t l = 0; l < 2; ++l) {
    const auto key_ref = prefilled(expected[l].first, nullptr).memory();
    const auto value_ref = prefilled(expected[l].second, nullptr).memory();
    EXPECT_EQ(2 * m.layers[l].held_bytes(),
              key_ref.layers[l].held_bytes() + value_ref.layers[l].held_bytes())
        << "layer " << l;
  }
}

TEST(CodecPlan, ASavedCacheLoadsBackWithItsArtifact) {
  const auto artifact = planned_artifact();
  const CompressedCache planned = prefilled("plan-t", artifact);
  testutil::TempDir dir;
  planned.save(dir.file("c.safetensors"));
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  const CompressedCache loaded =
      CompressedCache::load(dir.file("c.safetensors"), c.geometry(), artifact);
  EXPECT_EQ(loaded.parameters().key_codec, "plan-t");
  EXPECT_EQ(loaded.memory().held_bytes, planned.memory().held_bytes);
  for (int64_t l = 0; l < 2; ++l) {
    EXPECT_TRUE(at::equal(detail::reconstruct_layer(planned, 0, l).values,
                          detail::reconstruct_layer(loaded, 0, l).values));
  }
  EXPECT_SKV_ERROR(CompressedCache::load(dir.file("c.safetensors"), c.geometry()), "artifact");
}

TEST(CodecPlan, AMissingArtifactOrPlanIsRefusedNamingThePlans) {
  const ModelConfig c = testutil::tiny_config(4, 2, 8);
  CompressionParameters p;
  p.codebook = CodebookMode::kNone;
  p.set_codec("plan-t");
  EXPECT_SKV_ERROR(CompressedCache(c.geometry(), 1, p),
                   "codecs 'plan-t' / 'plan-t' needs an artifact");
  p.set_codec("plan3");
  EXPECT_SKV_ERROR(CompressedCache(c.geometry(), 1, p, planned_artifact()),
                   "no codec plan 'plan3' (it has: plan-t)");
  EXPECT_SKV_ERROR(parse_row_codec("plan/x"), "suffix");
  EXPECT_TRUE(is_row_codec_name("plan2.5"));
  EXPECT_FALSE(is_row_codec_name("plan"));
}

TEST(CodecPlan, MalformedPlansAreRefusedNamingPlanLayerAndValue) {
  auto check = [](const std::function<void(CodecPlans&)>& edit, const std::string& needle) {
    CodecPlans plans = planned_artifact()->codec_plans;
    edit(plans);
    EXPECT_SKV_ERROR(plans.validate(2), needle);
  };
  check([](CodecPlans& p) { p.plans[0].keys.pop_back(); }, "keys: layers");
  check([](CodecPlans& p) { p.plans[0].values[1] = "tq9x"; }, "values of layer 1");
  check([](CodecPlans& p) { p.plans[0].keys[0] = "fp8-calibrated"; }, "needs an artifact itself");
  check([](CodecPlans& p) { p.plans[0].keys[0] = "plan-t"; }, "needs an artifact itself");
  check([](CodecPlans& p) { p.plans.push_back(p.plans[0]); }, "given twice");
  check([](CodecPlans& p) { p.plans[0].name = "tq3"; }, "must be 'plan' and a suffix");
  check([](CodecPlans& p) { p.sensitivity.keys[1][0] = -1; }, "layer 1 holds -1");
  check([](CodecPlans& p) { p.sensitivity.values[0].pop_back(); }, "layer 0 candidates");
  check([](CodecPlans& p) { p.sensitivity.row_bytes.pop_back(); }, "row_bytes");
  EXPECT_SKV_ERROR(codec_plans_from_json("{\"plans\": 3}"), "metadata 'codec_plans'");
}

TEST(CodecPlan, TheArtifactRoundTripsPlansAndOmitsTheKeyWithoutThem) {
  testutil::TempDir dir;
  Artifact a = *planned_artifact();
  save_artifact(dir.file("a.safetensors"), a);
  const Artifact b = load_artifact(dir.file("a.safetensors"));
  EXPECT_EQ(codec_plans_to_json(b.codec_plans), codec_plans_to_json(a.codec_plans));
  EXPECT_EQ(b.codec_plans.at("plan-t").values[1], "tq4");
  // A plan whose layer is refused is not written.
  a.codec_plans.plans[0].keys[0] = "tq9x";
  EXPECT_SKV_ERROR(save_artifact(dir.file("bad.safetensors"), a), "keys of layer 0");
  a.codec_plans = {};
  save_artifact(dir.file("plain.safetensors"), a);
  EXPECT_EQ(SafetensorsReader(dir.file("plain.safetensors")).metadata().count("codec_plans"), 0u);
  EXPECT_TRUE(load_artifact(dir.file("plain.safetensors")).codec_plans.plans.empty());
}

}  // namespace
}  // namespace spindlekv
