#!/usr/bin/env bash
# The CUDA half of the runtime, compiled where there is nvcc but neither a GPU
# nor a CUDA LibTorch (CI): decode_kernel.cu by nvcc for the architectures a
# CUDA build targets (CMakeLists.txt: 80 and 90), warnings as errors, and
# decode_attention.cpp as a CUDA build compiles it (SPINDLEKV_WITH_CUDA, the
# CUDA headers, the flags of BUILD's compile_commands.json). Then checks that
# the kernel object defines what the host side calls, and that no kernel
# spills registers. Links and runs nothing: Debian's LibTorch has no
# c10_cuda. The kernels' arithmetic is tested on the CPU instead
# (tests/fused_decode_emulated_test.cpp). Skips (exit 77,
# ctest's skip code) where nvcc is missing. ctest runs it as
# cuda_compile_check in every build that is not itself a CUDA build.
#   bash scripts/cuda_compile_check.sh [BUILD]   (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [[ ! -x $NVCC ]]; then
  echo "cuda_compile_check: no nvcc here, skipped"
  exit 77
fi
# The CUDA install nvcc belongs to, as nvcc itself reports it (TOP): nvcc
# may be a wrapper script elsewhere (/usr/local/bin/nvcc on CI's machine).
top=$("$NVCC" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)
[[ -n $top && -d $top ]] || top=$(dirname "$(readlink -f "$NVCC")")/..
CUDA_HOME=$(cd "$top" && pwd -P)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$NVCC" --version | tail -n 1
"$NVCC" -std=c++17 -O3 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -Xptxas -v -Ilib \
  -c lib/runtime/detail/decode_kernel.cu -o "$work/decode_kernel.o" > "$work/nvcc.log" 2>&1 ||
  { cat "$work/nvcc.log"; echo "cuda_compile_check: nvcc failed on decode_kernel.cu" >&2; exit 1; }
kernels=$(grep -c "Compiling entry function" "$work/nvcc.log" || true)
spills=$(grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$work/nvcc.log" || true)
echo "decode_kernel.cu: $kernels kernels compiled (sm_80, sm_90)"
if [[ -n $spills ]]; then
  grep -E "Compiling entry|spill" "$work/nvcc.log" | grep -B1 -E "[1-9][0-9]* bytes spill"
  echo "cuda_compile_check: a kernel spills registers" >&2
  exit 1
fi

# The host side: the build's own command for decode_attention.cpp, plus CUDA.
command=$(grep -o '"command": "[^"]*detail/decode_attention.cpp"' "$BUILD/compile_commands.json" |
  head -n 1 | sed -e 's/^"command": "//' -e 's/"$//') ||
  { echo "cuda_compile_check: no command for decode_attention.cpp in $BUILD/compile_commands.json" >&2; exit 1; }
[[ -n $command ]] || { echo "cuda_compile_check: build $BUILD first" >&2; exit 1; }
# The one header LibTorch generates for its CUDA build, absent from Debian's.
mkdir -p "$work/include/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$work/include/c10/cuda/impl/cuda_cmake_macros.h"
cpu_object=$BUILD/$(grep -o ' -o [^ ]*' <<< "$command" | head -n 1 | cut -c5-)
command=$(sed -e "s| -o [^ ]*| -o $work/decode_attention.o|" <<< "$command")
# shellcheck disable=SC2086
(cd "$BUILD" && $command -Werror -DSPINDLEKV_WITH_CUDA=1 -isystem "$CUDA_HOME/include" \
  -isystem "$work/include") ||
  { echo "cuda_compile_check: decode_attention.cpp does not compile with CUDA" >&2; exit 1; }
echo "decode_attention.cpp: compiles with SPINDLEKV_WITH_CUDA"

# What the CUDA host side calls beyond the CPU build's object must be
# defined by the kernel object.
undefined() { nm --undefined-only "$1" | awk '$2 ~ /^_ZN9spindlekv/ {print $2}' | sort -u; }
nm --defined-only "$work/decode_kernel.o" | awk '{print $3}' | sort -u > "$work/defined.txt"
missing=0
for symbol in $(comm -23 <(undefined "$work/decode_attention.o") <(undefined "$cpu_object")); do
  if ! grep -qx "$symbol" "$work/defined.txt"; then
    echo "cuda_compile_check: decode_kernel.o does not define $(c++filt "$symbol")" >&2
    missing=1
  fi
done
if [[ $missing == 0 ]]; then
  echo "decode_kernel.o defines the $(comm -23 <(undefined "$work/decode_attention.o") \
    <(undefined "$cpu_object") | wc -l) functions the CUDA host side adds"
fi
exit "$missing"
