#!/usr/bin/env bash
# The GPU check (issue #16), on a machine with a CUDA GPU and a CUDA
# LibTorch (by default the one of python3's PyTorch): builds the runtime-only
# configuration (core, runtime, model and their tests; see CMakeLists.txt)
# against it, then runs those tests with SPINDLEKV_TEST_DEVICE=cuda, so that
# tests/device_parity_test.cpp compares every cache mode on the GPU with the
# CPU. Needs .gpu_deps/ (bash scripts/gpu_deps.sh, on a machine with the
# Debian packages) when nlohmann-json, xxHash or googletest are not installed.
# Then the GPU benchmark: bench/hf_peer.py writes a 4-layer Llama-3-8B-shaped
# model and times Hugging Face transformers on it, and bench/gpu_bench
# measures ours against dense attention and transformers (GPU_BENCH_ARGS adds
# options; SKIP_BENCH=1 skips both).
# Logs go to $OUT (the device tool's output folder) or build-gpu/.
#   TORCH_PREFIX=/path/to/libtorch/share/cmake  overrides the LibTorch
#   SPINDLEKV_TEST_DEVICE=cuda:1                 another device
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build-gpu}
LOGS=${OUT:-$BUILD}
mkdir -p "$LOGS"
if [[ -z ${TORCH_PREFIX:-} ]]; then
  TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
fi
TORCH_LIB=$(cd "$TORCH_PREFIX/../.." && pwd)/lib
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/gpu.txt" ||
  { echo "gpu_check: no GPU (nvidia-smi failed)" >&2; exit 2; }
third_party=()
[[ -d .gpu_deps ]] && third_party=(-DSPINDLEKV_THIRD_PARTY_DIR="$PWD/.gpu_deps")
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSPINDLEKV_RUNTIME_ONLY=ON \
  -DSPINDLEKV_BUILD_BENCH=ON -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" "${third_party[@]}" \
  > "$LOGS/configure.log" 2>&1 || { tail -n 40 "$LOGS/configure.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" > "$LOGS/build.log" 2>&1 || { tail -n 60 "$LOGS/build.log"; exit 1; }
export SPINDLEKV_TEST_DEVICE=${SPINDLEKV_TEST_DEVICE:-cuda}
status=0
(cd "$BUILD" && ctest --output-on-failure -j 8 --timeout 600) > "$LOGS/ctest.log" 2>&1 || status=$?
grep -E "tests passed|tests failed|Failed|\*\*\*" "$LOGS/ctest.log" | tail -n 30
# The device tests must have run, not skipped: the parity tests, and the
# fused kernels' tests (they skip in a build without SPINDLEKV_CUDA).
if grep -E "(DeviceParity|FusedDecode)\..*(Skipped|Not Run)" "$LOGS/ctest.log"; then
  echo "gpu_check: the device tests skipped on $SPINDLEKV_TEST_DEVICE" >&2
  status=1
fi
grep -q "fused CUDA decode kernel ON" "$LOGS/configure.log" ||
  { echo "gpu_check: the build has no fused CUDA kernels (SPINDLEKV_CUDA is off)" >&2; status=1; }
if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  PYTHONUNBUFFERED=1 python3 bench/hf_peer.py "$BUILD/hf-model" "$LOGS/hf_peer.json" \
    > "$LOGS/hf_peer.log" 2>&1 || { echo "gpu_check: hf_peer.py failed"; tail -n 20 "$LOGS/hf_peer.log"; }
  # shellcheck disable=SC2086
  "$BUILD/gpu_bench" --model "$BUILD/hf-model" --hf-result "$LOGS/hf_peer.json" \
    ${GPU_BENCH_ARGS:-} 2>&1 | tee "$LOGS/gpu_bench.txt" || { echo "gpu_check: gpu_bench failed"; status=1; }
fi
exit "$status"
