#!/usr/bin/env bash
# The inference-loop example (the README links it): it compiles (it is a
# build target), runs on the reference model with the artifact of the
# reference pipeline test and finds a pass key.
# Usage: inference_loop_test.sh EXAMPLE_BINARY SOURCE_DIR ARTIFACT
set -euo pipefail
EXE=$1
SRC=$2
ARTIFACT=$3
FILLER=$(head -c 1500 "$SRC/calibration/heldout.txt" | tr '\n' ' ')
PROMPT="${FILLER:0:300} The pass key is 42917. Remember it. 42917 is the pass key. ${FILLER:300:500}
What is the pass key? The pass key is "
OUT=$("$EXE" "$SRC/data/reference-model" "$ARTIFACT" "$PROMPT")
echo "$OUT"
echo "$OUT" | grep -q "answer '42917'"
