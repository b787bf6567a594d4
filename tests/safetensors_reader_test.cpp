#include "core/safetensors_reader.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/safetensors_writer.h"
#include "test_util.h"

namespace spindlekv {
namespace {

// Builds a file from a hand-written header and `data_bytes` bytes of data.
std::string make_file(const std::string& header, size_t data_bytes, bool fix_length = true,
                      uint64_t forced_length = 0) {
  std::string out(8, '\0');
  uint64_t len = fix_length ? header.size() : forced_length;
  std::memcpy(out.data(), &len, 8);
  out += header;
  out.append(data_bytes, '\x01');
  return out;
}

class SafetensorsBadInput : public ::testing::Test {
 protected:
  std::string write(const std::string& bytes) {
    const std::string path = dir_.file("bad.safetensors");
    testutil::write_bytes(path, bytes);
    return path;
  }
  testutil::TempDir dir_;
};

TEST(SafetensorsReader, RoundTripsEveryDtypeAndMetadata) {
  testutil::TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", at::randn({3, 5})},
      {"f16", at::randn({4}).to(at::kHalf)},
      {"bf16", at::randn({2, 2, 3}).to(at::kBFloat16)},
      {"i64", at::arange(7, at::kLong)},
      {"u8", at::arange(9, at::kByte).view({3, 3})},
      {"scalar", at::scalar_tensor(2.5, at::kDouble)},
      {"empty", at::empty({0, 4})},
  };
  write_safetensors(dir.file("t.safetensors"), tensors, {{"format", "pt"}, {"k", "v"}});
  SafetensorsReader r(dir.file("t.safetensors"));
  EXPECT_EQ(r.tensor_names().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    at::Tensor back = r.tensor(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(back, t)) << name;
  }
  EXPECT_EQ(r.metadata().at("k"), "v");
  EXPECT_EQ(r.info("bf16").dtype, SafetensorsDType::kBF16);
}

TEST(SafetensorsReader, WriterAlignsDataSectionTo8Bytes) {
  testutil::TempDir dir;
  write_safetensors(dir.file("t.safetensors"), {{"a", at::ones({3})}});
  const std::string bytes = read_file(dir.file("t.safetensors"));
  uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  EXPECT_EQ((8 + len) % 8, 0u);
}

TEST(SafetensorsReader, MissingTensorIsNamed) {
  testutil::TempDir dir;
  write_safetensors(dir.file("t.safetensors"), {{"a", at::ones({3})}});
  SafetensorsReader r(dir.file("t.safetensors"));
  EXPECT_SKV_ERROR(r.tensor("model.norm.weight"), "tensor 'model.norm.weight' not found");
}

TEST_F(SafetensorsBadInput, MissingFileIsNamed) {
  EXPECT_SKV_ERROR(SafetensorsReader(dir_.file("nope.safetensors")), "nope.safetensors");
}

TEST_F(SafetensorsBadInput, FileShorterThanLengthFieldIsRefused) {
  EXPECT_SKV_ERROR(SafetensorsReader(write("abc")), "too short");
}

TEST_F(SafetensorsBadInput, HeaderLengthPastEndIsRefused) {
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file("{}", 0, false, 1000))),
                   "runs past the end of the file");
}

TEST_F(SafetensorsBadInput, HugeHeaderLengthIsRefused) {
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file("{}", 0, false, ~0ull))), "implausible");
}

TEST_F(SafetensorsBadInput, InvalidJsonIsRefused) {
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file("{\"a\": [", 0))), "not valid JSON");
}

TEST_F(SafetensorsBadInput, UnknownDtypeIsNamedWithTheTensor) {
  const std::string h = R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})";
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file(h, 2))), "tensor 'w': dtype 'F8_E4M3'");
}

TEST_F(SafetensorsBadInput, ShapeThatDisagreesWithByteSpanIsRefused) {
  const std::string h = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file(h, 8))), "tensor 'w': byte span");
}

TEST_F(SafetensorsBadInput, TruncatedDataIsRefused) {
  const std::string h = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file(h, 10))), "truncated");
}

TEST_F(SafetensorsBadInput, OverlappingTensorsAreRefused) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file(h, 12))), "overlaps");
}

TEST_F(SafetensorsBadInput, HoleInDataIsRefused) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file(h, 12))), "hole before tensor 'b'");
}

TEST_F(SafetensorsBadInput, TrailingUnindexedBytesAreRefused) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file(h, 9))), "data section size");
}

TEST_F(SafetensorsBadInput, NegativeShapeIsRefused) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})";
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file(h, 4))), "non-negative");
}

TEST_F(SafetensorsBadInput, ReversedOffsetsAreRefused) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})";
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file(h, 4))), "reversed");
}

TEST_F(SafetensorsBadInput, NonStringMetadataIsRefused) {
  const std::string h = R"({"__metadata__":{"a":1}})";
  EXPECT_SKV_ERROR(SafetensorsReader(write(make_file(h, 0))), "not a string");
}

TEST(SafetensorsWriter, DuplicateNamesAreRefused) {
  testutil::TempDir dir;
  EXPECT_SKV_ERROR(
      write_safetensors(dir.file("t.safetensors"), {{"a", at::ones({1})}, {"a", at::ones({1})}}),
      "duplicate tensor name 'a'");
  EXPECT_FALSE(std::filesystem::exists(dir.file("t.safetensors")));
}

}  // namespace
}  // namespace spindlekv
