// The codebook reader against files that lie (issue #46): shapes, dtypes and
// ranges are checked before a row is read.
#include "train/codebook_file.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>

#include "core/error.h"
#include "hdf5_fixtures.h"
#include "test_util.h"

namespace spindlekv {
namespace {

struct CodebookFileReader : ::testing::Test {
  testutil::TempDir dir;
  std::string path = dir.file("books.h5");
  void SetUp() override { fixtures::write_tiny_codebooks(path); }
};

TEST_F(CodebookFileReader, ValidFileReadsBackWhatWasWritten) {
  const CodebookFile f = read_codebook_file(path);
  ASSERT_EQ(f.layers.size(), 2u);
  EXPECT_EQ(f.layer(1).keys.codewords.sizes(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(f.layer(1).keys.sizes, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(f.layer(0).values.support[0][1].item<int64_t>(), 4);
  EXPECT_EQ(f.layer(0).values.heldout_curve[1], (std::vector<double>{0.3, 0.5, 0.5}));
}

// Was: accepted, and a support row read past the end of the dataset.
TEST_F(CodebookFileReader, SupportShorterThanItsCodebookIsRefused) {
  fixtures::replace_dataset(path, "/layers/0/key_support", H5T_STD_I64LE, {2, 2}, {});
  EXPECT_SKV_ERROR(read_codebook_file(path),
                   "dataset '/layers/0/key_support' has shape [2, 2], expected [rows, 3]");
}

TEST_F(CodebookFileReader, CurveShorterThanItsGroupsIsRefused) {
  fixtures::replace_dataset(path, "/layers/1/value_coverage_curve", H5T_IEEE_F64LE, {1, 3}, {});
  EXPECT_SKV_ERROR(read_codebook_file(path), "has 1 rows, expected 2");
}

TEST_F(CodebookFileReader, CodebookOfAnotherHeadDimOrGroupCountIsRefused) {
  fixtures::replace_dataset(path, "/layers/1/key_codebook", H5T_IEEE_F32LE, {2, 3, 8}, {});
  EXPECT_SKV_ERROR(read_codebook_file(path), "expected [2, K, 4]");
  fixtures::write_tiny_codebooks(dir.file("b.h5"));
  fixtures::replace_dataset(dir.file("b.h5"), "/layers/0/value_codebook", H5T_IEEE_F32LE, {3, 3, 4},
                            {});
  EXPECT_SKV_ERROR(read_codebook_file(dir.file("b.h5")), "expected [2, K, 4]");
}

TEST_F(CodebookFileReader, IntegerCodebooksAndOutOfRangeValuesAreRefused) {
  fixtures::replace_dataset(path, "/layers/0/key_codebook", H5T_STD_I32LE, {2, 3, 4}, {});
  EXPECT_SKV_ERROR(read_codebook_file(path), "holds integer elements, expected float");
  fixtures::write_tiny_codebooks(dir.file("b.h5"));
  fixtures::poke(dir.file("b.h5"), "/layers/1/key_coverage", 1, 1.5);
  EXPECT_SKV_ERROR(read_codebook_file(dir.file("b.h5")), "'key_coverage' holds 1.5");
  fixtures::write_tiny_codebooks(dir.file("c.h5"));
  fixtures::poke(dir.file("c.h5"), "/layers/1/value_support", 4, -3);
  EXPECT_SKV_ERROR(read_codebook_file(dir.file("c.h5")), "holds a negative count");
  fixtures::write_tiny_codebooks(dir.file("d.h5"));
  fixtures::poke(dir.file("d.h5"), "/layers/0/key_codebook", 5,
                 std::numeric_limits<double>::quiet_NaN());
  EXPECT_SKV_ERROR(read_codebook_file(dir.file("d.h5")), "contains NaN or Inf");
}

TEST_F(CodebookFileReader, AttributesOutsideTheirRangesAreRefused) {
  fixtures::set_int_attr(path, "/", "num_kv_heads", 0);
  EXPECT_SKV_ERROR(read_codebook_file(path), "attribute 'num_kv_heads' is 0");
  fixtures::write_tiny_codebooks(dir.file("b.h5"));
  {
    h5::Handle f = h5::open_file(dir.file("b.h5"), true);
    h5::write_attr(f, "curve_sizes", std::vector<int64_t>{1, 3, 2});
  }
  EXPECT_SKV_ERROR(read_codebook_file(dir.file("b.h5")), "attribute 'curve_sizes' must rise");
  fixtures::write_tiny_codebooks(dir.file("c.h5"));
  {
    h5::Handle f = h5::open_file(dir.file("c.h5"), true);
    h5::write_attr(f, "layers", std::vector<int64_t>{1, 1});
  }
  EXPECT_SKV_ERROR(read_codebook_file(dir.file("c.h5")), "negative or listed twice");
}

}  // namespace
}  // namespace spindlekv
