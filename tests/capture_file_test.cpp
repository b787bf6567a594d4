// The capture reader against files that lie: every attribute is checked
// against every dataset's shape and dtype before a row is read, and the rows
// read against their ranges (issue #46's findings are the first cases).
#include "capture/capture_file.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>

#include "core/error.h"
#include "hdf5_fixtures.h"
#include "test_util.h"

namespace spindlekv {
namespace {

using fixtures::TinyCapture;

struct CaptureFile : ::testing::Test {
  testutil::TempDir dir;
  std::string path = dir.file("cap.h5");
  TinyCapture t;
  void SetUp() override { fixtures::write_tiny_capture(path, t); }
};

TEST_F(CaptureFile, ValidFileReadsBackWhatWasWritten) {
  ASSERT_NO_THROW(fixtures::read_whole_capture(path));
  CaptureReader r(path);
  EXPECT_TRUE(r.finished());
  EXPECT_EQ(r.complete_sequences(), t.sequences);
  EXPECT_EQ(r.vector_count(1), t.sequences * t.seq_len);
  EXPECT_EQ(r.read_keys(1, 2, 3).sizes(), (std::vector<int64_t>{3, t.kv_heads, t.head_dim}));
  EXPECT_EQ(r.read_index(0, "sequence_ids").max().item<int64_t>(), t.sequences - 1);
  EXPECT_EQ(r.read_statistic(0, "retained_mass").sizes(),
            (std::vector<int64_t>{t.sequences, t.heads, 3}));
}

// Was: glibc's "munmap_chunk(): invalid pointer" (rows read past the buffer).
TEST_F(CaptureFile, HeadDimThatDisagreesWithTheDatasetsIsRefused) {
  fixtures::set_int_attr(path, "/", "head_dim", 8);
  EXPECT_SKV_ERROR(CaptureReader{path}, "dataset '/layers/0/keys' has shape [18, 2, 4], expected");
  fixtures::set_int_attr(path, "/", "head_dim", 2);
  EXPECT_SKV_ERROR(CaptureReader{path}, "expected [rows, 2, 2]");
}

// Was: a LibTorch backtrace (exit 5).
TEST_F(CaptureFile, NegativeHeadDimIsRefusedNamingTheAttribute) {
  fixtures::set_int_attr(path, "/", "head_dim", -4);
  EXPECT_SKV_ERROR(CaptureReader{path}, "attribute 'head_dim' is -4, outside [1, ");
}

TEST_F(CaptureFile, AttributesOutsideTheirRangesAreRefused) {
  fixtures::set_int_attr(path, "/", "num_kv_heads", 3);
  EXPECT_SKV_ERROR(CaptureReader{path}, "'num_heads' (4) is not a multiple of 'num_kv_heads' (3)");
  fixtures::write_tiny_capture(dir.file("b.h5"), t);
  fixtures::set_int_attr(dir.file("b.h5"), "/", "finished", 7);
  EXPECT_SKV_ERROR(CaptureReader{dir.file("b.h5")}, "attribute 'finished' is 7");
  fixtures::write_tiny_capture(dir.file("c.h5"), t);
  fixtures::set_int_attr(dir.file("c.h5"), "/layers/1", "committed_vectors", 1000);
  EXPECT_SKV_ERROR(CaptureReader{dir.file("c.h5")}, "attribute 'committed_vectors' is 1000");
  fixtures::write_tiny_capture(dir.file("d.h5"), t);
  {
    h5::Handle f = h5::open_file(dir.file("d.h5"), true);
    h5::write_attr(f, "layers", std::vector<int64_t>{0, 0});
  }
  EXPECT_SKV_ERROR(CaptureReader{dir.file("d.h5")}, "lists layer 0 twice");
  fixtures::write_tiny_capture(dir.file("e.h5"), t);
  {
    h5::Handle f = h5::open_file(dir.file("e.h5"), true);
    h5::write_attr(f, "head_dim", std::string("4"));
  }
  EXPECT_SKV_ERROR(CaptureReader{dir.file("e.h5")}, "attribute 'head_dim' is not an integer");
}

TEST_F(CaptureFile, KeysOfTheWrongRankAreRefused) {
  fixtures::replace_dataset(path, "/layers/0/keys", H5T_IEEE_F32LE, {18, 8}, {});
  EXPECT_SKV_ERROR(CaptureReader{path}, "dataset '/layers/0/keys' has shape [18, 8]");
}

TEST_F(CaptureFile, IntegerKeysAreRefused) {
  fixtures::replace_dataset(path, "/layers/1/keys", H5T_STD_I8LE, {18, 2, 4}, {});
  EXPECT_SKV_ERROR(CaptureReader{path},
                   "dataset '/layers/1/keys' holds integer elements, expected float");
}

TEST_F(CaptureFile, FloatIndexColumnsAreRefused) {
  fixtures::replace_dataset(path, "/layers/0/positions", H5T_IEEE_F64LE, {18}, {});
  EXPECT_SKV_ERROR(CaptureReader{path}, "holds float elements, expected integer");
}

TEST_F(CaptureFile, InfInValuesIsRefused) {
  fixtures::poke(path, "/layers/1/values", 37, std::numeric_limits<double>::infinity());
  CaptureReader r(path);
  EXPECT_NO_THROW(r.read_values(1, 0, 4));  // element 37 is in row 4
  EXPECT_SKV_ERROR(r.read_values(1, 0, 18), "dataset 'values' holds NaN or Inf in rows [0, 18)");
}

TEST_F(CaptureFile, PositionsShorterThanTheKeysAreRefused) {
  fixtures::replace_dataset(path, "/layers/0/positions", H5T_STD_I64LE, {12}, {});
  EXPECT_SKV_ERROR(CaptureReader{path}, "dataset 'positions' has 12 rows, fewer than the 18");
}

TEST_F(CaptureFile, NegativePositionsAndAbsurdSequenceIdsAreRefused) {
  fixtures::poke(path, "/layers/0/positions", 3, -1);
  fixtures::poke(path, "/layers/1/sequence_ids", 5, 1e12);
  fixtures::poke(path, "/layers/1/token_ids", 2, -7);
  CaptureReader r(path);
  EXPECT_SKV_ERROR(r.read_index(0, "positions"), "'positions' holds values in [-1, 5]");
  EXPECT_SKV_ERROR(r.read_index(1, "sequence_ids"), "outside [0, 3)");
  EXPECT_SKV_ERROR(r.read_index(1, "token_ids"), "'token_ids' holds values in [-7");
  EXPECT_NO_THROW(r.read_index(1, "positions"));
}

TEST_F(CaptureFile, StatisticsOfTheWrongShapeOrOutsideTheirRangeAreRefused) {
  fixtures::replace_dataset(path, "/layers/0/stats/retained_mass", H5T_IEEE_F64LE, {3, 4, 2}, {});
  EXPECT_SKV_ERROR(CaptureReader{path}, "expected [rows, 4, 3]");
  fixtures::write_tiny_capture(dir.file("b.h5"), t);
  fixtures::poke(dir.file("b.h5"), "/layers/1/stats/sink_mass", 0, 2.5);
  EXPECT_SKV_ERROR(CaptureReader{dir.file("b.h5")}.read_statistic(1, "sink_mass"),
                   "'stats/sink_mass' holds NaN, Inf or values outside [0, 1]");
  EXPECT_SKV_ERROR(CaptureReader{dir.file("b.h5")}.read_statistic(1, "bogus"),
                   "unknown statistic 'bogus'");
}

TEST_F(CaptureFile, ReadsOutsideTheCommittedRowsAreRefused) {
  CaptureReader r(path);
  EXPECT_SKV_ERROR(r.read_keys(0, 17, 2), "outside the 18 committed vectors");
  EXPECT_SKV_ERROR(r.read_keys(0, -1, 1), "outside the 18 committed vectors");
  EXPECT_SKV_ERROR(r.read_keys(5, 0, 1), "layer 5 was not captured");
}

}  // namespace
}  // namespace spindlekv
