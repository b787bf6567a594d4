// Fuzzes the artifact loader: metadata, checksum, version, shapes. Seeds
// are valid artifacts; most mutations must fail the checksum, the rest must
// be refused by validation or load cleanly.
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
  return 0;
}
