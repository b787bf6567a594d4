// Shared by the libFuzzer targets: input bytes as a file, and the rule that
// a parser may only ever fail with spindlekv::Error.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace spindlekv::fuzz {

/// A per-process temporary file name ending in `suffix`.
inline std::string temp_path(const char* suffix) {
  return "/tmp/spindlekv-fuzz-" + std::to_string(::getpid()) + suffix;
}

/// Writes the input to a per-process temporary file and returns its path.
inline std::string write_input(const uint8_t* data, size_t size, const char* suffix) {
  const std::string path = temp_path(suffix);
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  return path;
}

/// A reader's refusal of bad input: any kind but kInternal, which is a bug
/// (an invariant of ours, or LibTorch or the allocator failing, wrapped by
/// with_context) and so a finding: the fuzzer reports the abort.
inline void expect_refusal(const Error& e) {
  if (e.kind() == ErrorKind::kInternal) {
    std::fprintf(stderr, "internal error on fuzz input: %s\n", e.what());
    std::abort();
  }
}

}  // namespace spindlekv::fuzz
