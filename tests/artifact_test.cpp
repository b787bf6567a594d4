#include "runtime/artifact.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>

#include "core/safetensors_reader.h"
#include "core/safetensors_writer.h"
#include "test_util.h"

namespace spindlekv {
namespace {

using testutil::TempDir;

const std::string kFingerprint =
    std::string(32, 'a') + ":" + std::string(32, 'b') + ":" + std::string(32, 'c');

Artifact small_artifact() {
  Artifact a;
  a.model_fingerprint = kFingerprint;
  a.num_layers = 2;
  a.num_heads = 4;
  a.num_kv_heads = 2;
  a.head_dim = 4;
  a.window = 8;
  at::manual_seed(1);
  for (int64_t l = 0; l < 2; ++l) {
    ArtifactLayer L;
    L.key_codebook = at::randn({2, 3, 4});
    L.key_codebook = L.key_codebook / L.key_codebook.norm(2, -1, true);
    L.key_codebook[1][2].zero_();
    L.key_sizes = {3, 2};
    L.value_codebook = at::randn({1, 2, 4});
    L.value_codebook = L.value_codebook / L.value_codebook.norm(2, -1, true);
    L.value_sizes = {2};
    L.key_coverage = {0.9, 0.8};
    L.value_coverage = {0.7};
    a.layers.push_back(L);
  }
  a.pyramid.context_ratios = {0.1, 0.5};
  a.pyramid.fractions = {{0.15, 0.05}, {0.95, 0.05}};
  a.calibrated = a.pyramid;
  a.calibrated.fractions = {{0.18, 0.02}, {0.9, 0.1}};
  return a;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST(Artifact, RoundTripsEveryField) {
  TempDir dir;
  Artifact a = small_artifact();
  save_artifact(dir.file("a.safetensors"), a);
  Artifact b = load_artifact_for_model(dir.file("a.safetensors"), kFingerprint);
  EXPECT_EQ(b.checksum, a.checksum);
  EXPECT_EQ(b.num_kv_heads, 2);
  EXPECT_EQ(b.window, 8);
  EXPECT_DOUBLE_EQ(b.key_threshold, 0.98);
  EXPECT_EQ(b.layers[1].key_sizes, (std::vector<int64_t>{3, 2}));
  EXPECT_TRUE(at::equal(b.layers[1].key_codebook, a.layers[1].key_codebook));
  EXPECT_EQ(b.layers[0].value_coverage, std::vector<double>{0.7});
  EXPECT_EQ(b.calibrated.fractions, a.calibrated.fractions);
  // Any safetensors reader sees plain tensors.
  SafetensorsReader r(dir.file("a.safetensors"));
  EXPECT_EQ(r.info("layers.0.keys.codebook").shape, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(r.metadata().at("format"), "spindlekv-artifact");
}

TEST(Artifact, TamperedBytesFailTheChecksum) {
  TempDir dir;
  Artifact a = small_artifact();
  save_artifact(dir.file("a.safetensors"), a);
  std::string bytes = read_all(dir.file("a.safetensors"));
  bytes[bytes.size() - 3] ^= 0x40;  // inside the last tensor's data
  testutil::write_bytes(dir.file("t.safetensors"), bytes);
  EXPECT_SKV_ERROR(load_artifact(dir.file("t.safetensors")), "checksum mismatch");
}

TEST(Artifact, EditedMetadataFailsTheChecksum) {
  TempDir dir;
  Artifact a = small_artifact();
  save_artifact(dir.file("a.safetensors"), a);
  SafetensorsReader r(dir.file("a.safetensors"));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& n : r.tensor_names()) tensors.emplace_back(n, r.tensor(n));
  auto meta = r.metadata();
  meta["window"] = "64";
  write_safetensors(dir.file("m.safetensors"), tensors, meta);
  EXPECT_SKV_ERROR(load_artifact(dir.file("m.safetensors")), "checksum mismatch");
  meta = r.metadata();
  meta["format_version"] = "2";
  write_safetensors(dir.file("v.safetensors"), tensors, meta);
  try {
    load_artifact(dir.file("v.safetensors"));
    ADD_FAILURE() << "a newer format version loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("newer than this build"), std::string::npos);
  }
}

TEST(Artifact, AnotherModelIsRefusedSayingWhichPartDiffers) {
  TempDir dir;
  Artifact a = small_artifact();
  save_artifact(dir.file("a.safetensors"), a);
  const std::string other_weights = kFingerprint.substr(0, 66) + std::string(32, 'd');
  EXPECT_SKV_ERROR(load_artifact_for_model(dir.file("a.safetensors"), other_weights),
                   "differ in weights");
  const std::string other_arch = std::string(32, 'e') + kFingerprint.substr(32);
  EXPECT_SKV_ERROR(load_artifact_for_model(dir.file("a.safetensors"), other_arch),
                   "differ in architecture");
  ModelConfig c = testutil::tiny_config(4, 2, 8);
  EXPECT_SKV_ERROR(a.check_geometry(c.geometry()), "head_dim");
}

TEST(Artifact, InvalidContentsAreRefusedBeforeWriting) {
  TempDir dir;
  Artifact a = small_artifact();
  a.layers[0].key_sizes = {4, 2};
  EXPECT_SKV_ERROR(save_artifact(dir.file("a.safetensors"), a), "size 4 outside");
  a = small_artifact();
  a.layers[1].value_codebook[0][0] *= 2;
  EXPECT_SKV_ERROR(save_artifact(dir.file("a.safetensors"), a), "norm off 1");
  a = small_artifact();
  a.gqa_mode = "split";
  EXPECT_SKV_ERROR(save_artifact(dir.file("a.safetensors"), a), "allowed: repeat, average");
  EXPECT_FALSE(std::filesystem::exists(dir.file("a.safetensors")));
}

TEST(Artifact, SavedFileHoldsExactlyTheLayoutsTensorsAndKeys) {
  TempDir dir;
  Artifact a = small_artifact();
  save_artifact(dir.file("a.safetensors"), a);
  SafetensorsReader r(dir.file("a.safetensors"));
  std::vector<std::string> want = artifact_tensor_names(a.num_layers, false),
                           have = r.tensor_names();
  std::sort(want.begin(), want.end());
  std::sort(have.begin(), have.end());
  EXPECT_EQ(have, want);
  std::set<std::string> keys;
  for (const auto& [k, v] : r.metadata()) keys.insert(k);
  std::set<std::string> want_keys;
  for (const auto& e : kArtifactMetadata) want_keys.insert(e.name);
  // codec_plans is written only when a plan was made; this artifact has none.
  ASSERT_TRUE(a.codec_plans.plans.empty());
  want_keys.erase("codec_plans");
  EXPECT_EQ(keys, want_keys);
}

// docs/artifact_format.md documents the layout table: the backticked names in
// the first column of its Tensors and Metadata tables are exactly the table's.
TEST(Artifact, FormatDocumentListsExactlyTheLayoutTable) {
  std::ifstream in(std::string(SPINDLEKV_SOURCE_DIR) + "/docs/artifact_format.md");
  ASSERT_TRUE(in.good());
  std::set<std::string> tensors, metadata, *section = nullptr;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) {
      section = line.find("Tensors") != std::string::npos    ? &tensors
                : line.find("Metadata") != std::string::npos ? &metadata
                                                             : nullptr;
      continue;
    }
    if (section == nullptr || line.rfind("| `", 0) != 0) continue;
    const std::string first = line.substr(1, line.find('|', 1) - 1);
    for (size_t at = first.find('`'); at != std::string::npos;) {
      const size_t end = first.find('`', at + 1);
      section->insert(first.substr(at + 1, end - at - 1));
      at = first.find('`', end + 1);
    }
  }
  std::set<std::string> want_tensors, want_metadata;
  for (const auto& e : kArtifactTensors) want_tensors.insert(e.name);
  for (const auto& e : kArtifactMetadata) want_metadata.insert(e.name);
  EXPECT_EQ(tensors, want_tensors);
  EXPECT_EQ(metadata, want_metadata);
}

TEST(Artifact, Fp8ScalesAreOptionalAndRoundTrip) {
  TempDir dir;
  Artifact a = small_artifact();
  for (ArtifactLayer& L : a.layers) {
    L.fp8_key_scale = at::rand({a.num_kv_heads}) + 0.5;
    L.fp8_value_scale = at::rand({a.num_kv_heads}) + 0.5;
  }
  save_artifact(dir.file("a.safetensors"), a);
  const Artifact b = load_artifact(dir.file("a.safetensors"));
  for (int64_t l = 0; l < a.num_layers; ++l) {
    EXPECT_TRUE(at::equal(b.layers[l].fp8_key_scale, a.layers[l].fp8_key_scale));
    EXPECT_TRUE(at::equal(b.layers[l].fp8_value_scale, a.layers[l].fp8_value_scale));
  }
  a.layers[0].fp8_value_scale = at::Tensor();  // keys without values
  EXPECT_SKV_ERROR(save_artifact(dir.file("b.safetensors"), a), "fp8 scales must be given");
  a.layers[0].fp8_value_scale = -at::ones({a.num_kv_heads});
  EXPECT_SKV_ERROR(save_artifact(dir.file("b.safetensors"), a), "finite and positive");
}

TEST(Artifact, ANonArtifactFileIsNamedAsSuch) {
  TempDir dir;
  write_safetensors(dir.file("x.safetensors"), {{"w", at::zeros({2})}}, {{"format", "pt"}});
  EXPECT_SKV_ERROR(load_artifact(dir.file("x.safetensors")), "not a SpindleKV artifact");
  testutil::write_bytes(dir.file("trunc.safetensors"), "\x10\x00\x00");
  EXPECT_SKV_ERROR(load_artifact(dir.file("trunc.safetensors")), "trunc.safetensors");
}

}  // namespace
}  // namespace spindlekv
