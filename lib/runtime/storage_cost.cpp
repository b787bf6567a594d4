#include "runtime/storage_cost.h"

#include "core/error.h"

namespace spindlekv {

const char* to_string(StorageDtype dtype) {
  switch (dtype) {
    case StorageDtype::kFloat32:
      return "float32";
    case StorageDtype::kFloat16:
      return "float16";
    case StorageDtype::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

StorageDtype parse_storage_dtype(const std::string& name) {
  if (name == "float32") return StorageDtype::kFloat32;
  if (name == "float16") return StorageDtype::kFloat16;
  if (name == "bfloat16") return StorageDtype::kBFloat16;
  SKV_THROW(kInvalidInput, "storage dtype '", name,
            "' is unknown (allowed: float32, float16, bfloat16)");
}

}  // namespace spindlekv
