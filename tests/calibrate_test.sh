#!/usr/bin/env bash
# `spindlekv calibrate`: one config runs capture, train, export and eval; a
# rerun skips unchanged stages; changing only the eval section reruns only
# eval; bad configs are refused naming the key.
# Usage: calibrate_test.sh SPINDLEKV_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
BIN=$1
SRC=$2
WORK=$3
rm -rf "$WORK"
mkdir -p "$WORK"
write_config() {  # $1: eval ratio
  cat > "$WORK/config.yaml" <<YAML
model: $SRC/data/reference-model
out: $WORK/out
expect: {model_type: llama, num_hidden_layers: 6, num_key_value_heads: 1}
capture: {text: $SRC/calibration/calibration.txt, seq-len: 256, max-sequences: 6, quiet: true}
train: {max-codewords: 64, sample-size: 2000, heldout-size: 500, heldout-every: 3}
export: {beta: 0.05}
eval:
  methods: [full, snapkv, spindle]
  ratios: [$1]
  tasks: [ppl]
  text: $SRC/calibration/heldout.txt
  ppl-samples: 1
  ppl-context: 128
  ppl-continuation: 16
YAML
}
write_config 0.3
"$BIN" calibrate --config "$WORK/config.yaml" 2> "$WORK/run1.log" > /dev/null
for s in capture train export eval; do grep -q "$s: running" "$WORK/run1.log"; done
test -f "$WORK/out/artifact.safetensors"
test -f "$WORK/out/eval/results.json"
"$BIN" inspect "$WORK/out/artifact.safetensors" > /dev/null

"$BIN" calibrate --config "$WORK/config.yaml" 2> "$WORK/run2.log" > /dev/null
for s in capture train export eval; do grep -q "$s: inputs unchanged" "$WORK/run2.log"; done

write_config 0.4
"$BIN" calibrate --config "$WORK/config.yaml" 2> "$WORK/run3.log" > /dev/null
for s in capture train export; do grep -q "$s: inputs unchanged" "$WORK/run3.log"; done
grep -q "eval: running" "$WORK/run3.log"
grep -q '"target_ratio": 0.4' "$WORK/out/eval/results.json"

# A value out of range is refused naming it (earlier stages are unchanged).
write_config 1.5
if "$BIN" calibrate --config "$WORK/config.yaml" 2> "$WORK/run4.log" > /dev/null; then
  echo "accepted ratio 1.5"; exit 1
fi
grep -q "ratio 1.5 outside (0, 1\]" "$WORK/run4.log"

expect_refused() {  # $1: config text, $2: expected message
  printf '%s\n' "$1" > "$WORK/bad.yaml"
  if "$BIN" calibrate --config "$WORK/bad.yaml" 2> "$WORK/bad.err" > /dev/null; then
    echo "accepted a bad config: $1"; exit 1
  fi
  grep -q "$2" "$WORK/bad.err" || { echo "missing '$2' in:"; cat "$WORK/bad.err"; exit 1; }
}
expect_refused "model: $SRC/data/reference-model
out: $WORK/bad
captur: {}" "unknown key 'captur'"
expect_refused "model: $SRC/data/reference-model
out: $WORK/bad
expect: {num_key_value_heads: 8}
capture: {text: $SRC/calibration/calibration.txt}" "num_key_value_heads = 1 but the config expects 8"
expect_refused "model: $SRC/data/reference-model
out: $WORK/bad
capture: {text: $WORK/missing.txt}" "missing.txt"
expect_refused "model: $SRC/data/reference-model
out: $WORK/bad
capture: {text: $SRC/calibration/calibration.txt, seq-length: 10}" "seq-length"
echo "calibrate: stages run, skip and refuse as expected"
