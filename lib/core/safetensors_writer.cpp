#include "core/safetensors_writer.h"

#include <ATen/ATen.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"

namespace spindlekv {
namespace {

const char* safetensors_dtype(at::ScalarType t, const std::string& name) {
  switch (t) {
    case at::kDouble:
      return "F64";
    case at::kFloat:
      return "F32";
    case at::kHalf:
      return "F16";
    case at::kBFloat16:
      return "BF16";
    case at::kLong:
      return "I64";
    case at::kInt:
      return "I32";
    case at::kShort:
      return "I16";
    case at::kChar:
      return "I8";
    case at::kByte:
      return "U8";
    case at::kBool:
      return "BOOL";
    default:
      SKV_THROW(kUnsupported, "tensor '", name, "': dtype ", at::toString(t),
                " cannot be stored in safetensors by this writer");
  }
}

}  // namespace

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  with_context("writing '" + path + "'", [&] {
    std::vector<at::Tensor> cpu;
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
      nlohmann::ordered_json m = nlohmann::ordered_json::object();
      for (const auto& kv : metadata) m[kv.first] = kv.second;
      header["__metadata__"] = m;
    }
    std::set<std::string> seen;
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
      SKV_CHECK(name != "__metadata__", "a tensor may not be named __metadata__");
      SKV_CHECK(seen.insert(name).second, "duplicate tensor name '", name, "'");
      SKV_CHECK(t.defined(), "tensor '", name, "' is undefined");
      at::Tensor c = t.to(at::kCPU).contiguous();
      const uint64_t nbytes = c.numel() * c.element_size();
      nlohmann::ordered_json e;
      e["dtype"] = safetensors_dtype(c.scalar_type(), name);
      e["shape"] = c.sizes().vec();
      e["data_offsets"] = {offset, offset + nbytes};
      header[name] = e;
      offset += nbytes;
      cpu.push_back(c);
    }
    std::string h = header.dump();
    // Pad with spaces so the data section starts 8-byte aligned (allowed by
    // the format; lets readers map tensors without copying).
    while ((8 + h.size()) % 8 != 0) h.push_back(' ');
    const uint64_t len = h.size();
    AtomicFileWriter w(path);
    w.write(&len, 8);
    w.write(h);
    for (const auto& c : cpu) w.write(c.data_ptr(), c.numel() * c.element_size());
    w.commit();
  });
}

}  // namespace spindlekv
