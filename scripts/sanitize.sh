#!/usr/bin/env bash
# Builds SpindleKV with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DSPINDLEKV_SANITIZE=ON, every report fatal) and runs the tests that cover
# every parser (safetensors, config.json, tokenizers, HDF5 captures and
# codebooks, artifacts, compressed-cache files) and the runtime compression
# paths. Leak detection is off: LibTorch's static registries are never freed.
# SentencePiece tests are left out: its plugin must be dlopen'ed with
# RTLD_DEEPBIND (lib/model/sentencepiece_plugin.h), which the sanitizer
# runtime refuses (google/sanitizers#611).
#
# `scripts/sanitize.sh tsan` instead builds the runtime alone with clang's
# ThreadSanitizer in build-tsan/ and runs the concurrency test (caches on
# several threads over one shared artifact); any report fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-asan}" = tsan ]; then
  BUILD_DIR="${TSAN_BUILD_DIR:-build-tsan}"
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSPINDLEKV_TSAN=ON -DSPINDLEKV_RUNTIME_ONLY=ON -DSPINDLEKV_BUILD_BENCH=OFF
  cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target cache_threads_test
  # LibTorch and OpenBLAS are not instrumented: their own thread pools stay
  # at one thread, so that every thread TSan sees is the test's.
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
  export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  cd "$BUILD_DIR"
  exec ctest --output-on-failure --timeout 900 -L '^cache_threads_test$'
fi
BUILD_DIR="${ASAN_BUILD_DIR:-build-asan}"
TESTS=(error_test safetensors_reader_test model_config_test tokenizer_test npy_writer_test
       atomic_file_test capture_test capture_file_test codebook_file_test codebook_trainer_test
       layer_budgets_test
       codebook_builder_test artifact_test eviction_policy_test compressed_cache_test
       compressed_storage_test decode_sync_test batched_decode_test quantized_cache_test row_codec_test
       training_mix_test
       budget_calibrator_test metrics_test statistics_test yaml_options_test)
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPINDLEKV_SANITIZE=ON \
  -DSPINDLEKV_BUILD_BENCH=OFF
cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target "${TESTS[@]}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd "$BUILD_DIR"
ctest --output-on-failure -j "${JOBS:-2}" --timeout 900 -E SentencePiece -L "^($(IFS='|'; echo "${TESTS[*]}"))\$"
