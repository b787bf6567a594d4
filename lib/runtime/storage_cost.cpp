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

const char* to_string(KvQuantization mode) {
  switch (mode) {
    case KvQuantization::kNone:
      return "none";
    case KvQuantization::kFp8:
      return "fp8";
    case KvQuantization::kKivi4:
      return "kivi4";
    case KvQuantization::kKivi2:
      return "kivi2";
  }
  return "?";
}

KvQuantization parse_kv_quantization(const std::string& name) {
  if (name == "none") return KvQuantization::kNone;
  if (name == "fp8") return KvQuantization::kFp8;
  if (name == "kivi4") return KvQuantization::kKivi4;
  if (name == "kivi2") return KvQuantization::kKivi2;
  SKV_THROW(kInvalidInput, "KV quantisation '", name,
            "' is unknown (allowed: none, fp8, kivi4, kivi2)");
}

const char* to_string(Fp8Scales scales) {
  return scales == Fp8Scales::kDynamic ? "dynamic" : "calibrated";
}

Fp8Scales parse_fp8_scales(const std::string& name) {
  if (name == "dynamic") return Fp8Scales::kDynamic;
  if (name == "calibrated") return Fp8Scales::kCalibrated;
  SKV_THROW(kInvalidInput, "fp8 scales '", name, "' are unknown (allowed: dynamic, calibrated)");
}

}  // namespace spindlekv
