// Fuzzes config.json parsing and validation.
#include <string>

#include "core/error.h"
#include "core/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    spindlekv::ModelConfig c = spindlekv::parse_model_config(
        std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    c.validate();
    spindlekv::parse_model_config(spindlekv::model_config_to_json(c), "round trip");
  } catch (const spindlekv::Error&) {
  }
  return 0;
}
