// Shared fixtures for the tests: temporary directories and tiny model configs.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/model_config.h"
#include "runtime/row_codec.h"

namespace spindlekv::testutil {

/// A fresh directory under the system temp dir, removed when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// A 2-layer GQA Llama config small enough for loop-based reference checks.
ModelConfig tiny_config(int64_t heads = 4, int64_t kv_heads = 2, int64_t head_dim = 8);

/// The row codec `name` bound to `side` of layer 0 of a cache of `kv_heads`
/// heads of `head_dim` dimensions in `dtype`.
std::shared_ptr<const RowCoder> bind_row_codec(const std::string& name, int64_t kv_heads,
                                               int64_t head_dim, KvSide side = KvSide::kKeys,
                                               StorageDtype dtype = StorageDtype::kFloat16);

/// Saves a tiny random byte-level model (vocab 258, BOS 256, EOS 257,
/// 2 layers, 4 heads over 2 KV heads of size 8, 64 positions) into `dir`.
void write_byte_model(const std::string& dir, uint64_t seed);

/// Writes `repeats` sentences of English-like text to `path`.
void write_sample_text(const std::string& path, int repeats);

/// Writes `bytes` to `path` (non-atomically: fixtures only).
void write_bytes(const std::string& path, const std::string& bytes);

}  // namespace spindlekv::testutil

/// Expects `stmt` to throw spindlekv::Error whose message contains `needle`.
#define EXPECT_SKV_ERROR(stmt, needle)                                              \
  do {                                                                              \
    try {                                                                           \
      stmt;                                                                         \
      ADD_FAILURE() << "expected spindlekv::Error containing '" << (needle) << "'"; \
    } catch (const ::spindlekv::Error& e) {                                         \
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)              \
          << "message was: " << e.what();                                           \
    }                                                                               \
  } while (false)
