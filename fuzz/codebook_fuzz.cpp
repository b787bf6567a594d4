// Fuzzes the codebook reader (what `export` reads): edits (hdf5_mutator.h)
// of a tiny valid codebook file written by the real writer; the read must
// succeed or be refused with a clear spindlekv::Error, and what it returns
// must hold the shapes export relies on.
#include <cstdlib>
#include <filesystem>

#include "../tests/hdf5_fixtures.h"
#include "core/error.h"
#include "fuzz_util.h"
#include "hdf5_mutator.h"
#include "train/codebook_file.h"

namespace {

const std::string& base_file() {
  static const std::string path = [] {
    const std::string p = spindlekv::fuzz::temp_path(".codebook-base.h5");
    std::filesystem::remove(p);
    spindlekv::fixtures::write_tiny_codebooks(p);
    return p;
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spindlekv;
  const std::string path = fuzz::temp_path(".codebook.h5");
  std::filesystem::copy_file(base_file(), path, std::filesystem::copy_options::overwrite_existing);
  FuzzedDataProvider p(data, size);
  fuzz::mutate_hdf5(path, p);
  try {
    const CodebookFile f = read_codebook_file(path);
    const auto& m = f.metadata;
    const int64_t groups = m.sharing == "shared" ? 1 : m.num_kv_heads;
    for (const LayerCodebooks& L : f.layers) {
      for (const CodebookSet* s : {&L.keys, &L.values}) {
        // What export takes on trust after a successful read.
        if (s->codewords.dim() != 3 || s->codewords.size(0) != groups ||
            s->codewords.size(2) != m.head_dim || s->support.size(0) != groups ||
            s->support.size(1) != s->codewords.size(1) ||
            static_cast<int64_t>(s->sizes.size()) != groups ||
            static_cast<int64_t>(s->heldout_coverage.size()) != groups) {
          std::abort();
        }
      }
    }
  } catch (const Error& e) {
    fuzz::expect_refusal(e);
  }
  return 0;
}
