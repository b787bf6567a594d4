#include "core/version.h"

namespace spindlekv {

// SPINDLEKV_VERSION is the CMake project's VERSION (CMakeLists.txt).
const char* version_string() { return SPINDLEKV_VERSION; }

}  // namespace spindlekv
