// Fuzzes the capture reader (what `train` and `export` read): the input is a
// list of edits (hdf5_mutator.h) applied to a tiny valid capture written by
// the real writer (tests/hdf5_fixtures.h); every read must then succeed or
// be refused with a clear spindlekv::Error, never crash, read out of bounds
// or fail inside LibTorch (kInternal).
#include <filesystem>

#include "../tests/hdf5_fixtures.h"
#include "capture/capture_file.h"
#include "core/error.h"
#include "fuzz_util.h"
#include "hdf5_mutator.h"

namespace {

const std::string& base_file() {
  static const std::string path = [] {
    const std::string p = spindlekv::fuzz::temp_path(".capture-base.h5");
    std::filesystem::remove(p);
    spindlekv::fixtures::write_tiny_capture(p);
    return p;
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spindlekv;
  const std::string path = fuzz::temp_path(".capture.h5");
  std::filesystem::copy_file(base_file(), path, std::filesystem::copy_options::overwrite_existing);
  FuzzedDataProvider p(data, size);
  fuzz::mutate_hdf5(path, p);
  try {
    fixtures::read_whole_capture(path);
  } catch (const Error& e) {
    fuzz::expect_refusal(e);
  }
  return 0;
}
