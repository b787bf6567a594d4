#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + fuzzer
# instrumentation) in build-fuzz/ and runs each for SECONDS (default 60) from
# seed corpora made of the project's own valid files (the artifact seed is
# made with the regular build's CLI, build/spindlekv), through ctest.
# With RUNS, each target tries exactly that many inputs from seed 1 (no
# time limit), so the run is the same on every machine: CI uses 100000.
# Usage: scripts/fuzz.sh [SECONDS [RUNS]]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-60}"
RUNS="${2:-0}"
BUILD_DIR="${FUZZ_BUILD_DIR:-build-fuzz}"
CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSPINDLEKV_FUZZ=ON -DSPINDLEKV_BUILD_TESTS=OFF -DSPINDLEKV_BUILD_BENCH=OFF \
  -DSPINDLEKV_FUZZ_SECONDS="$SECONDS_PER_TARGET" -DSPINDLEKV_FUZZ_RUNS="$RUNS"
TARGETS=(safetensors_fuzz model_config_fuzz artifact_fuzz tokenizer_fuzz yaml_config_fuzz
         capture_fuzz codebook_fuzz compressed_cache_fuzz)
cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target "${TARGETS[@]}"

# Seeds: small valid files of each kind; the corpora start from them alone.
rm -rf "$BUILD_DIR/corpus"
KINDS="safetensors,model_config,artifact,tokenizer,yaml_config,capture,codebook,compressed_cache"
eval mkdir -p "$BUILD_DIR"/corpus/{$KINDS}
SEEDS="$BUILD_DIR/seeds"
rm -rf "$SEEDS"
eval mkdir -p "$SEEDS"/{$KINDS}
cp data/reference-model/config.json "$SEEDS/model_config/reference.json"
cp configs/*.yaml "$SEEDS/yaml_config/"
cp data/reference-model/tokenizer.json "$SEEDS/tokenizer/byte_marker.json"
/usr/bin/python3 - "$SEEDS" <<'PY'
import json, struct, sys
seeds = sys.argv[1]
def safetensors(path, tensors, meta=None):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta: header["__metadata__"] = meta
    h = json.dumps(header).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
safetensors(f"{seeds}/safetensors/small.safetensors",
            {"a": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
             "b": ("I64", [3], struct.pack("<3q", 7, 8, 9)),
             "c": ("BF16", [2], b"\x80\x3f\x00\x40")}, {"format": "pt"})
vocab = {bytes([b]).decode("latin-1"): b for b in range(256)}
json.dump({"model": {"type": "BPE", "vocab": vocab, "merges": []},
           "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}},
          open(f"{seeds}/tokenizer/bpe.json", "w"))
PY
# An artifact of a tiny model, through the real pipeline.
BIN="${SPINDLEKV_BIN:-build/spindlekv}"  # the regular build's CLI
W="$BUILD_DIR/seedwork"
rm -rf "$W"; mkdir -p "$W"
"$BIN" capture --model data/reference-model --text calibration/calibration.txt --out "$W/cap.h5" \
  --seq-len 128 --max-sequences 8 --quiet
"$BIN" train --capture "$W/cap.h5" --out "$W/books.h5" --max-codewords 4 --sample-size 500 \
  --heldout-size 100 --heldout-every 4 > /dev/null
# With a codec plan, so that the fuzzer mutates the codec_plans metadata too.
"$BIN" export --codebooks "$W/books.h5" --capture "$W/cap.h5" --out "$SEEDS/artifact/tiny.safetensors" \
  --ratios 0.5,1 --model data/reference-model --plan-bits 2.5 --plan-candidates tq2,tq4 \
  --plan-samples 1 --plan-context 64 --plan-continuation 8 > /dev/null
cp "$SEEDS/artifact/tiny.safetensors" "$SEEDS/safetensors/"
# Its codec_plans metadata alone: the artifact target also reads its input as that JSON.
/usr/bin/python3 - "$SEEDS/artifact" <<'PY'
import json, struct, sys
d = sys.argv[1]
raw = open(f"{d}/tiny.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
open(f"{d}/codec_plans.json", "w").write(json.loads(raw[8:8 + n])["__metadata__"]["codec_plans"])
PY

# Saved compressed caches of several codecs and codebook modes, written by
# the target itself. The capture and codebook targets edit the tests' tiny
# files (tests/hdf5_fixtures.h): their inputs are edit lists, from empty.
SPINDLEKV_FUZZ_WRITE_SEEDS="$SEEDS/compressed_cache" "$BUILD_DIR/fuzz/compressed_cache_fuzz"

# Each target runs as a ctest test (fuzz/CMakeLists.txt): any crash or
# sanitizer report fails it.
cd "$BUILD_DIR"
ctest --output-on-failure -j "${JOBS:-2}"
