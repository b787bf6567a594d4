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

}  // namespace spindlekv::testutil
