#!/usr/bin/env bash
# Copies what the runtime-only build needs beyond LibTorch from this
# machine's Debian packages into .gpu_deps/ (ignored by git), for a machine
# that has a CUDA LibTorch and no Debian packages: nlohmann/json.hpp
# (nlohmann-json3-dev), xxhash.h (libxxhash-dev) and googletest's sources
# (libgtest-dev). Carry .gpu_deps to that machine; scripts/gpu_check.sh
# passes it as SPINDLEKV_THIRD_PARTY_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.gpu_deps
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
for need in /usr/include/nlohmann/json.hpp /usr/include/xxhash.h /usr/src/googletest/CMakeLists.txt; do
  [[ -f $need ]] || { echo "gpu_deps: $need is missing (bash scripts/setup.sh installs it)" >&2; exit 2; }
done
cp -r /usr/include/nlohmann "$DEST.tmp/"
cp /usr/include/xxhash.h "$DEST.tmp/"
cp -r /usr/src/googletest "$DEST.tmp/googletest"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "gpu_deps: $(du -sh "$DEST" | cut -f1) in $DEST"
