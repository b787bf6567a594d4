#include "core/npy_writer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/atomic_file.h"
#include "test_util.h"

namespace spindlekv {
namespace {

TEST(NpyWriter, RoundTripsFloatMatrix) {
  testutil::TempDir dir;
  at::Tensor t = at::arange(12, at::kFloat).view({3, 4}) / 7.0;
  write_npy(dir.file("a.npy"), t);
  at::Tensor back = read_npy(dir.file("a.npy"));
  EXPECT_EQ(back.sizes(), t.sizes());
  EXPECT_TRUE(at::equal(back, t));
}

TEST(NpyWriter, HeaderIsNumpyVersion1AlignedTo64Bytes) {
  testutil::TempDir dir;
  write_npy(dir.file("a.npy"), at::zeros({5}, at::kLong));
  const std::string bytes = read_file(dir.file("a.npy"));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(1, 5), "NUMPY");
  const size_t header_len =
      static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_NE(bytes.find("'shape': (5,)"), std::string::npos);
  EXPECT_NE(bytes.find("'descr': '<i8'"), std::string::npos);
  EXPECT_EQ(bytes.size(), 10 + header_len + 5 * 8);
}

TEST(NpyWriter, TruncatedFileIsRefused) {
  testutil::TempDir dir;
  write_npy(dir.file("a.npy"), at::ones({4, 4}));
  std::string bytes = read_file(dir.file("a.npy"));
  testutil::write_bytes(dir.file("b.npy"), bytes.substr(0, bytes.size() - 3));
  EXPECT_SKV_ERROR(read_npy(dir.file("b.npy")), "data size does not match");
}

}  // namespace
}  // namespace spindlekv
