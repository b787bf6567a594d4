#!/usr/bin/env bash
# The README's inference-loop example: it compiles (it is a build target),
# runs on the reference model with the artifact of the reference pipeline
# test and finds a pass key, and the README shows exactly its code.
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
/usr/bin/python3 - "$SRC/examples/inference_loop.cpp" "$SRC/README.md" <<'PY'
import sys
code = open(sys.argv[1]).read()
body = code.split("// --- README example begins ---\n")[1].split("  // --- README example ends ---")[0]
readme = open(sys.argv[2]).read()
missing = [l.strip() for l in body.splitlines() if l.strip() and l.strip() not in readme]
assert not missing, f"README lacks lines of examples/inference_loop.cpp: {missing}"
print("README shows the example")
PY
