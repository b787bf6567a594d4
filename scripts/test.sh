#!/usr/bin/env bash
# Sets up a fresh machine (Debian packages), builds SpindleKV and runs the
# test suite with ctest, then the parser and runtime tests in a sanitizer
# build (scripts/sanitize.sh) and the runtime's concurrency test under
# ThreadSanitizer (scripts/sanitize.sh tsan). This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The sources follow .clang-format (Debian's clang-format 14).
git ls-files '*.cpp' '*.h' | xargs clang-format --dry-run --Werror
BUILD_DIR="${BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
# Two parallel compile jobs: LibTorch translation units take ~1.5 GB each.
cmake --build "$BUILD_DIR" -j "${JOBS:-2}"
(cd "$BUILD_DIR" && ctest --output-on-failure -j "${JOBS:-2}" --timeout 900)
# Then the parsers and the runtime again under ASan + UBSan (a second build),
# and libFuzzer on each parser (a clang build): 100000 inputs from a fixed
# seed, so every CI run explores the same inputs.
bash scripts/sanitize.sh
# Caches on several threads over one shared artifact, under ThreadSanitizer
# (a clang runtime-only build; any report fails it).
bash scripts/sanitize.sh tsan
SPINDLEKV_BIN="$BUILD_DIR/spindlekv" bash scripts/fuzz.sh 0 100000
