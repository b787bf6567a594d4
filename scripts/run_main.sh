#!/usr/bin/env bash
# The main job on the bundled reference model: sets up the machine, builds,
# captures the calibration split, trains codebooks, exports the artifact and
# reports the model.
# Outputs go to out/reference/ (or $OUT_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR="${BUILD_DIR:-build}"
OUT_DIR="${OUT_DIR:-out/reference}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j "${JOBS:-2}"
BIN="$BUILD_DIR/spindlekv"
mkdir -p "$OUT_DIR"
"$BIN" info data/reference-model
"$BIN" capture --model data/reference-model --text calibration/calibration.txt \
  --out "$OUT_DIR/capture.h5" --seq-len 1024 --overwrite
"$BIN" train --capture "$OUT_DIR/capture.h5" --out "$OUT_DIR/codebooks.h5" \
  --model data/reference-model --overwrite | tee "$OUT_DIR/codebooks.md"
"$BIN" export --codebooks "$OUT_DIR/codebooks.h5" --capture "$OUT_DIR/capture.h5" \
  --out "$OUT_DIR/artifact.safetensors" --model data/reference-model --overwrite | tee "$OUT_DIR/budgets.md"
"$BIN" inspect "$OUT_DIR/artifact.safetensors" --model data/reference-model | tee "$OUT_DIR/inspect.txt"
"$BIN" model-report data/reference-model --heldout calibration/heldout.txt \
  --out "$OUT_DIR/model_report.json" | tee "$OUT_DIR/model_report.md"
echo "main job done: $OUT_DIR"
