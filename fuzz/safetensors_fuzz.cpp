// Fuzzes the safetensors reader: header length, JSON, dtypes, shapes,
// offsets, overlaps and holes. Every tensor that opens is read in full.
#include "core/error.h"
#include "core/safetensors_reader.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = spindlekv::fuzz::write_input(data, size, ".safetensors");
  try {
    spindlekv::SafetensorsReader reader(path);
    for (const auto& name : reader.tensor_names()) reader.tensor(name);
  } catch (const spindlekv::Error&) {
  }
  return 0;
}
