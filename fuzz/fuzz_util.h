// Shared by the libFuzzer targets: input bytes as a file, and the rule that
// a parser may only ever fail with spindlekv::Error.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace spindlekv::fuzz {

/// Writes the input to a per-process temporary file and returns its path.
inline std::string write_input(const uint8_t* data, size_t size, const char* suffix) {
  const std::string path = "/tmp/spindlekv-fuzz-" + std::to_string(::getpid()) + suffix;
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  return path;
}

}  // namespace spindlekv::fuzz
