// Crash-consistent output files: write to a temporary sibling, then rename.
//
// rename(2) within one directory is atomic, so a reader sees either the old
// file or the complete new one, never a half-written file that loads as valid.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

namespace spindlekv {

/// Owns a temporary path next to `final_path`. commit() renames it into place;
/// if the guard is destroyed before commit() the temporary file is removed.
/// Use directly when a library (HDF5) writes the file by path.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string final_path);
  ~TempFileGuard();
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;

  /// "<dir>/.<name>.tmp-<pid>": hidden, and unique per process.
  const std::string& temp_path() const { return temp_path_; }
  const std::string& final_path() const { return final_path_; }
  /// fsyncs the temporary file and renames it to final_path.
  void commit();

 private:
  std::string final_path_;
  std::string temp_path_;
  bool committed_ = false;
};

/// Test hook for crash-consistency tests: when SPINDLEKV_TEST_COMMIT_DELAY_MS
/// is set, says "committing '<final_path>'" on stderr and sleeps that long
/// just before a finished output is renamed into place, so that a test can
/// kill the process while the complete temporary file exists.
void test_hook_before_commit(const std::string& final_path);

/// A binary file written through a TempFileGuard.
class AtomicFileWriter {
 public:
  /// Opens the temporary file; throws kIo naming `final_path` if it cannot.
  explicit AtomicFileWriter(const std::string& final_path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  /// Appends `size` bytes; throws kIo (for example on a full disk).
  void write(const void* data, std::size_t size);
  void write(const std::string& bytes) { write(bytes.data(), bytes.size()); }
  /// Flushes, fsyncs, closes and renames into place.
  void commit();

 private:
  TempFileGuard guard_;
  std::FILE* file_ = nullptr;
};

/// Writes `bytes` to `path` atomically.
void write_file_atomically(const std::string& path, const std::string& bytes);

/// Reads a whole file; throws kIo naming the path if it cannot.
std::string read_file(const std::string& path);

}  // namespace spindlekv
