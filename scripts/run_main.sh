#!/usr/bin/env bash
# The main job on the bundled reference model: sets up the machine, builds,
# and runs `spindlekv calibrate --config configs/reference.yaml` (capture of
# the calibration split, codebook training, export of the artifact, a short
# evaluation), then inspects the artifact and reports the model.
# Outputs go to out/reference/ (or $OUT_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR="${BUILD_DIR:-build}"
OUT_DIR="${OUT_DIR:-out/reference}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target spindlekv spindlekv_sentencepiece
BIN="$BUILD_DIR/spindlekv"
mkdir -p "$OUT_DIR"
"$BIN" info data/reference-model
"$BIN" calibrate --config configs/reference.yaml --out "$OUT_DIR" | tee "$OUT_DIR/calibrate.md"
"$BIN" inspect "$OUT_DIR/artifact.safetensors" --model data/reference-model | tee "$OUT_DIR/inspect.txt"
"$BIN" model-report data/reference-model --heldout calibration/heldout.txt \
  --out "$OUT_DIR/model_report.json" | tee "$OUT_DIR/model_report.md"
echo "main job done: $OUT_DIR"
