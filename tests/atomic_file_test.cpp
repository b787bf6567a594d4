#include "core/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace spindlekv {
namespace {
namespace fs = std::filesystem;

TEST(AtomicFile, CommittedFileHasContentAndNoTemporaryRemains) {
  testutil::TempDir dir;
  write_file_atomically(dir.file("out.bin"), "hello");
  EXPECT_EQ(read_file(dir.file("out.bin")), "hello");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(AtomicFile, UncommittedWriterLeavesPreviousFileIntact) {
  testutil::TempDir dir;
  write_file_atomically(dir.file("out.bin"), "old");
  {
    AtomicFileWriter w(dir.file("out.bin"));
    w.write("new and partial");
    // destroyed without commit, as when an exception unwinds mid-write
  }
  EXPECT_EQ(read_file(dir.file("out.bin")), "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(AtomicFile, MissingDirectoryIsAClearError) {
  testutil::TempDir dir;
  EXPECT_SKV_ERROR(write_file_atomically(dir.file("no/such/out.bin"), "x"), "does not exist");
}

TEST(AtomicFile, ReadingMissingFileNamesIt) {
  EXPECT_SKV_ERROR(read_file("/nonexistent/file.json"), "/nonexistent/file.json");
}

}  // namespace
}  // namespace spindlekv
