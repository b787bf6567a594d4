// Fuzzes the artifact loader: metadata, checksum, version, shapes. Seeds
// are valid artifacts; most mutations must fail the checksum, the rest must
// be refused by validation or load cleanly. The same bytes are also read as
// the codec_plans metadata (JSON), which the checksum would otherwise guard
// from every mutation.
#include "core/error.h"
#include "fuzz_util.h"
#include "runtime/artifact.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = spindlekv::fuzz::write_input(data, size, ".artifact");
  try {
    spindlekv::Artifact a = spindlekv::load_artifact(path);
    a.validate();
    a.calibrated.at(0.2);
  } catch (const spindlekv::Error&) {
  }
  try {
    spindlekv::codec_plans_from_json(std::string(reinterpret_cast<const char*>(data), size))
        .validate(2);
  } catch (const spindlekv::Error&) {
  }
  return 0;
}
