#!/usr/bin/env bash
# `cmake --install` the build into a temporary prefix, then build and run a
# separate project that finds it with find_package(SpindleKV) and links the
# runtime alone (examples/consumer).
# Usage: install_consumer_test.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
BUILD=$1
SRC=$2
WORK=$3
rm -rf "$WORK"
mkdir -p "$WORK"
cmake --install "$BUILD" --prefix "$WORK/prefix" > "$WORK/install.log"
test -x "$WORK/prefix/bin/spindlekv"
test -f "$WORK/prefix/include/spindlekv/runtime/compressed_cache.h"
test -f "$WORK/prefix/include/spindlekv/spindlekv/runtime.h"
test ! -e "$WORK/prefix/include/spindlekv/runtime/detail"
# Only the engine's headers: core and runtime, not the offline stages.
for other in model capture train export eval; do
  test ! -e "$WORK/prefix/include/spindlekv/$other" || { echo "installed $other headers"; exit 1; }
done
# The runtime's public headers name no FAISS, HDF5 or YAML type.
if grep -rlE "faiss|hdf5|H5[A-Z]|YAML" "$WORK/prefix/include/spindlekv"; then
  echo "runtime headers mention FAISS, HDF5 or YAML"; exit 1
fi
LAUNCHER=()
if command -v ccache > /dev/null; then LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$SRC/examples/consumer" -B "$WORK/consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$WORK/prefix" "${LAUNCHER[@]}" > "$WORK/configure.log"
cmake --build "$WORK/consumer" > "$WORK/build.log"
"$WORK/consumer/consumer"
# The README shows exactly the example's configuration of a cache.
/usr/bin/python3 - "$SRC/examples/consumer/main.cpp" "$SRC/README.md" <<'PY'
import sys
code = open(sys.argv[1]).read()
body = code.split("// --- README example begins ---\n")[1].split("  // --- README example ends ---")[0]
readme = open(sys.argv[2]).read()
missing = [l.strip() for l in body.splitlines() if l.strip() and l.strip() not in readme]
assert not missing, f"README lacks lines of examples/consumer/main.cpp: {missing}"
print("README shows the example")
PY
