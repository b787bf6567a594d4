// The toolkit's version, recorded in every file it writes.
#pragma once

namespace spindlekv {

/// "MAJOR.MINOR.PATCH" of this build.
const char* version_string();

}  // namespace spindlekv
