#!/usr/bin/env bash
# Configures and builds SPINDLEKV_RUNTIME_ONLY with every package but
# LibTorch, nlohmann-json, xxHash and GoogleTest hidden from CMake (FAISS,
# HDF5, yaml-cpp, CLI11, spdlog, and pkg-config, so no SentencePiece plugin):
# what a machine with only a (CUDA) LibTorch has. Then runs its tests.
# Usage: runtime_only_build_test.sh SOURCE_DIR WORK_DIR
set -euo pipefail
SRC=$1
WORK=$2
rm -rf "$WORK"
mkdir -p "$WORK"
hidden=()
for p in faiss HDF5 yaml-cpp CLI11 spdlog PkgConfig OpenMP; do
  hidden+=("-DCMAKE_DISABLE_FIND_PACKAGE_${p}=TRUE")
done
cmake -S "$SRC" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPINDLEKV_RUNTIME_ONLY=ON \
  -DSPINDLEKV_BUILD_BENCH=OFF "${hidden[@]}" > "$WORK/configure.log" 2>&1 ||
  { cat "$WORK/configure.log"; exit 1; }
cmake --build "$WORK/build" -j "${JOBS:-2}" > "$WORK/build.log" 2>&1 ||
  { tail -n 60 "$WORK/build.log"; exit 1; }
# The libraries an engine links, and nothing of the offline stages.
for lib in core runtime model; do
  test -f "$WORK/build/lib/$lib/libspindlekv_$lib.a" || { echo "no spindlekv_$lib"; exit 1; }
done
for other in capture train export eval; do
  test ! -e "$WORK/build/lib/$other" || { echo "runtime-only build has lib/$other"; exit 1; }
done
test ! -e "$WORK/build/spindlekv" || { echo "runtime-only build has the CLI"; exit 1; }
test ! -e "$WORK/build/libspindlekv_sentencepiece.so" ||
  { echo "plugin built without pkg-config"; exit 1; }
# Nothing links FAISS, HDF5 or yaml-cpp.
if grep -E "faiss|hdf5|yaml-cpp" "$WORK/build/build.ninja" > /dev/null; then
  echo "runtime-only build names FAISS, HDF5 or yaml-cpp"; exit 1
fi
(cd "$WORK/build" && ctest --output-on-failure -j "${JOBS:-2}" --timeout 900 > "$WORK/ctest.log" 2>&1) ||
  { tail -n 80 "$WORK/ctest.log"; exit 1; }
tail -n 3 "$WORK/ctest.log"
