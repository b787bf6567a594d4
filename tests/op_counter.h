// Counts what LibTorch records (RecordFunction: ATen operations, profiler
// scopes, SpindleKV's fused kernels) on the calling thread while an
// OpCounter lives, by name. One at a time: every OpCounter shares the counts.
#pragma once

#include <ATen/record_function.h>

#include <map>
#include <memory>
#include <string>

namespace spindlekv::testutil {

class OpCounter {
 public:
  OpCounter() : handle_(at::addThreadLocalCallback(at::RecordFunctionCallback(&count))) {
    counts().clear();
  }
  ~OpCounter() { at::removeCallback(handle_); }
  OpCounter(const OpCounter&) = delete;
  OpCounter& operator=(const OpCounter&) = delete;
  /// Times `name` was recorded.
  int operator[](const std::string& name) const {
    auto it = counts().find(name);
    return it == counts().end() ? 0 : it->second;
  }

 private:
  static std::map<std::string, int>& counts() {
    static std::map<std::string, int> c;
    return c;
  }
  static std::unique_ptr<at::ObserverContext> count(const at::RecordFunction& fn) {
    ++counts()[fn.name()];
    return nullptr;
  }
  at::CallbackHandle handle_;
};

/// Counts the operations that wait for the device to read it back, issued
/// on the calling thread while it lives: scalar reads (every `item()` ends
/// in `_local_scalar_dense`), selections of data-dependent size, `equal`,
/// and the runtime's copies to the host ("spindlekv::read_back",
/// runtime/detail/host_transfer.h). Counted on the CPU too, where nothing waits.
class ReadBackCounter {
 public:
  int reads() const {
    static const char* const kReadBack[] = {"aten::_local_scalar_dense",
                                            "aten::nonzero",
                                            "aten::masked_select",
                                            "aten::equal",
                                            "aten::_unique",
                                            "aten::_unique2",
                                            "aten::unique_dim",
                                            "aten::unique_consecutive",
                                            "spindlekv::read_back"};
    int n = 0;
    for (const char* name : kReadBack) n += ops_[name];
    return n;
  }

 private:
  OpCounter ops_;
};

}  // namespace spindlekv::testutil
