#include "common/version.h"

namespace spindlekv {

const char* version_string() { return "0.1.0"; }

}  // namespace spindlekv
