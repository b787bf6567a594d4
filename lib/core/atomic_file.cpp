#include "core/atomic_file.h"

#include <chrono>
#include <cstdlib>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace spindlekv {
namespace fs = std::filesystem;

namespace {
std::string make_temp_path(const std::string& final_path) {
  fs::path p(final_path);
  fs::path dir = p.parent_path();
  std::string name = "." + p.filename().string() + ".tmp-" + std::to_string(::getpid());
  return (dir.empty() ? fs::path(name) : dir / name).string();
}
}  // namespace

TempFileGuard::TempFileGuard(std::string final_path)
    : final_path_(std::move(final_path)), temp_path_(make_temp_path(final_path_)) {
  fs::path dir = fs::path(final_path_).parent_path();
  if (!dir.empty() && !fs::is_directory(dir)) {
    SKV_THROW(kIo, "cannot write '", final_path_, "': directory '", dir.string(),
              "' does not exist");
  }
}

TempFileGuard::~TempFileGuard() {
  if (!committed_) {
    std::error_code ec;
    fs::remove(temp_path_, ec);  // best effort: never throw from a destructor
  }
}

void test_hook_before_commit(const std::string& final_path) {
  const char* ms = std::getenv("SPINDLEKV_TEST_COMMIT_DELAY_MS");
  if (ms == nullptr) return;
  std::fprintf(stderr, "spindlekv: test hook: committing '%s'\n", final_path.c_str());
  std::fflush(stderr);
  std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(ms)));
}

void TempFileGuard::commit() {
  SKV_ASSERT(!committed_, "commit called twice for ", final_path_);
  test_hook_before_commit(final_path_);
  int fd = ::open(temp_path_.c_str(), O_RDONLY);
  if (fd < 0) {
    SKV_THROW(kIo, "cannot open temporary file '", temp_path_, "': ", std::strerror(errno));
  }
  const bool synced = ::fsync(fd) == 0;
  const int sync_errno = errno;
  ::close(fd);
  if (!synced) {
    SKV_THROW(kIo, "cannot sync '", temp_path_, "': ", std::strerror(sync_errno));
  }
  if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    SKV_THROW(kIo, "cannot rename '", temp_path_, "' to '", final_path_,
              "': ", std::strerror(errno));
  }
  committed_ = true;
  // The rename itself must reach the disk too: sync the directory entry.
  // File systems that cannot sync a directory (EINVAL, EROFS) are left as is.
  const fs::path parent = fs::path(final_path_).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir_fd < 0) return;
  const bool dir_synced = ::fsync(dir_fd) == 0;
  const int dir_errno = errno;
  ::close(dir_fd);
  if (!dir_synced && dir_errno != EINVAL && dir_errno != EROFS) {
    SKV_THROW(kIo, "cannot sync directory '", dir, "' after renaming '", final_path_,
              "' into it: ", std::strerror(dir_errno));
  }
}

AtomicFileWriter::AtomicFileWriter(const std::string& final_path) : guard_(final_path) {
  file_ = std::fopen(guard_.temp_path().c_str(), "wb");
  if (file_ == nullptr) {
    SKV_THROW(kIo, "cannot create '", guard_.temp_path(), "' for '", final_path,
              "': ", std::strerror(errno));
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void AtomicFileWriter::write(const void* data, std::size_t size) {
  SKV_ASSERT(file_ != nullptr, "write after commit");
  if (size > 0 && std::fwrite(data, 1, size, file_) != size) {
    SKV_THROW(kIo, "writing '", guard_.final_path(), "' failed: ", std::strerror(errno));
  }
}

void AtomicFileWriter::commit() {
  SKV_ASSERT(file_ != nullptr, "commit called twice");
  const bool flushed = std::fflush(file_) == 0;
  const int flush_errno = errno;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) {
    SKV_THROW(kIo, "writing '", guard_.final_path(), "' failed: ", std::strerror(flush_errno));
  }
  guard_.commit();
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  AtomicFileWriter writer(path);
  writer.write(bytes);
  writer.commit();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) SKV_THROW(kIo, "cannot open '", path, "': ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) SKV_THROW(kIo, "cannot read '", path, "'");
  return ss.str();
}

}  // namespace spindlekv
