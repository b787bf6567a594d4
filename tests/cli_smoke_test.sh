#!/usr/bin/env bash
# End-to-end smoke run of the CLI: a few steps of the reference-model recipe
# (the same code as the real training), then info, run, model-report and
# capture on the result, and the error paths of the option handling.
# Usage: cli_smoke_test.sh SPINDLEKV_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
BIN=$1
SRC=$2
WORK=$3
PY=/usr/bin/python3
rm -rf "$WORK"
mkdir -p "$WORK"

cat > "$WORK/smoke.yaml" <<'YAML'
layers: 2
hidden: 32
heads: 4
kv_heads: 1
head_dim: 8
intermediate: 64
steps: 40
tokens_per_step: 1024
min_seq_len: 64
max_seq_len: 128
warmup_steps: 5
log_every: 10
checkpoint_every: 0
YAML
"$BIN" train-model --config "$WORK/smoke.yaml" --text "$SRC/calibration/calibration.txt" \
  --out "$WORK/model" --threads 2
for f in config.json model.safetensors tokenizer.json training_log.json; do
  test -s "$WORK/model/$f" || { echo "missing $f"; exit 1; }
done
# The loss must fall during the run.
"$PY" - "$WORK/model/training_log.json" <<'PY'
import json, sys
log = json.load(open(sys.argv[1]))
curve = [p["loss"] for p in log["loss_curve"]]
assert len(curve) == 4, curve
assert curve[-1] < curve[0] - 0.5, curve
PY

"$BIN" info "$WORK/model" | tee "$WORK/info.txt"
grep -q "layers: *2" "$WORK/info.txt"
grep -q "kv heads: *1 (group size 4)" "$WORK/info.txt"

"$BIN" run "$WORK/model" --prompt "In the beginning" --max-new 8 --logits-out "$WORK/logits.npy"
"$PY" -c "import numpy as n, sys; a = n.load(sys.argv[1]); assert a.shape == (17, 258), a.shape; assert n.isfinite(a).all()" "$WORK/logits.npy"
# The same model in bfloat16: float32 logits close to the float32 model's;
# a dtype that is no model dtype is refused by name.
"$BIN" run "$WORK/model" --prompt "In the beginning" --max-new 2 --dtype bfloat16 \
  --logits-out "$WORK/logits_bf16.npy"
"$PY" -c "import numpy as n, sys; a, b = n.load(sys.argv[1]), n.load(sys.argv[2]); assert a.shape == b.shape and a.dtype == n.float32, (a.shape, a.dtype); assert n.abs(a - b).max() < 0.1 * (1 + n.abs(b).max()), n.abs(a - b).max()" "$WORK/logits_bf16.npy" "$WORK/logits.npy"
if "$BIN" run "$WORK/model" --prompt "x" --dtype fp64 2> "$WORK/err_dtype.txt"; then
  echo "--dtype fp64 was accepted"; exit 1
fi
grep -q "dtype 'fp64' is not a model dtype" "$WORK/err_dtype.txt"

"$BIN" model-report "$WORK/model" --heldout "$SRC/calibration/heldout.txt" --lengths 128 \
  --depths 0.5 --trials-per-cell 2 --multikey-pairs 1 --attention-sequences 1 --out "$WORK/report.json"
"$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); assert r['passkey']['trials'] == 2 and len(r['attention']) == 2" "$WORK/report.json"

"$BIN" capture --model "$WORK/model" --text "$SRC/calibration/calibration.txt" --out "$WORK/cap.h5" \
  --seq-len 128 --max-sequences 3 --quiet
"$PY" -c "import h5py, sys; f = h5py.File(sys.argv[1]); assert f['layers/1/keys'].shape == (384, 1, 8)" "$WORK/cap.h5"
# Captured in bfloat16: the same datasets, stored as float32.
"$BIN" capture --model "$WORK/model" --text "$SRC/calibration/calibration.txt" \
  --out "$WORK/cap_bf16.h5" --seq-len 128 --max-sequences 1 --dtype bfloat16 --quiet
"$PY" -c "import h5py, sys; f = h5py.File(sys.argv[1]); k = f['layers/1/keys']; assert k.shape == (128, 1, 8) and k.dtype == 'float32', (k.shape, k.dtype)" "$WORK/cap_bf16.h5"

# The SentencePiece recipe: a tiny tokenizer from Debian's spm_train, a task
# mixture, and a run cut in two pieces (--stop-after, then --resume) that
# ends where one uninterrupted run would; then model-report with RULER.
spm_train --input="$SRC/calibration/calibration.txt" --model_prefix="$WORK/spm" --vocab_size=512 \
  --model_type=bpe --split_digits=true --byte_fallback=true --minloglevel=2 > "$WORK/spm.log" 2>&1
cat > "$WORK/spm.yaml" <<'YAML'
mix: [passkey:0.3, niah_single:0.3]
layers: 2
hidden: 32
heads: 4
kv_heads: 2
head_dim: 8
intermediate: 64
steps: 6
tokens_per_step: 1024
min_seq_len: 512
max_seq_len: 512
warmup_steps: 2
log_every: 1
checkpoint_every: 0
YAML
spm_args=(--config "$WORK/spm.yaml" --tokenizer "$WORK/spm.model" --text "$SRC/calibration/calibration.txt" --threads 2)
"$BIN" train-model "${spm_args[@]}" --out "$WORK/spm_model" --stop-after 4
"$BIN" train-model "${spm_args[@]}" --out "$WORK/spm_model" --resume "$WORK/spm_model"
for f in config.json model.safetensors tokenizer.model optimizer.pt trainer_state.json; do
  test -s "$WORK/spm_model/$f" || { echo "missing $f"; exit 1; }
done
"$PY" - "$WORK/spm_model" <<'PY'
import json, sys
d = sys.argv[1]
log = json.load(open(d + "/training_log.json"))
assert [p["step"] for p in log["loss_curve"]] == [1, 2, 3, 4, 5, 6], log["loss_curve"]
assert [p["from_step"] for p in log["pieces"]] == [0, 4], log["pieces"]
assert log["checkpoint_step"] == 6 and log["mix"] == ["passkey:0.3", "niah_single:0.3"]
assert json.load(open(d + "/trainer_state.json"))["step"] == 6
assert json.load(open(d + "/config.json"))["vocab_size"] == 512
PY
"$BIN" model-report "$WORK/spm_model" --heldout "$SRC/calibration/heldout.txt" \
  --heldout-modern "$SRC/calibration/calibration.txt" --lengths 512 --depths 0.5 --trials-per-cell 1 \
  --ruler-tasks niah_single --attention-sequences 1 --out "$WORK/spm_report.json"
"$PY" -c "
import json, sys
r = json.load(open(sys.argv[1]))
assert r['tokenizer'] == 'sentencepiece' and r['heldout_bits_per_byte'] > 0, r
assert r['heldout_modern_bits_per_byte'] > 0
assert r['passkey']['trials'] == 1 and r['ruler']['niah_single']['trials'] == 1, r
assert r['ruler']['niah_single']['cells'][0]['depth'] == 0.5, r
assert len(r['attention']) == 2" "$WORK/spm_report.json"
# Resuming with another schedule is refused, naming the key.
if "$BIN" train-model "${spm_args[@]}" --out "$WORK/spm_model" --resume "$WORK/spm_model" \
  --steps 9 2> "$WORK/err3.txt"; then
  echo "a resume with other steps was accepted"; exit 1
fi
grep -q "schedule key 'steps' is 6 but this run has 9" "$WORK/err3.txt"

# A YAML key that no option has is refused, naming it.
echo "stepz: 3" > "$WORK/bad.yaml"
if "$BIN" train-model --config "$WORK/bad.yaml" --out "$WORK/m2" 2> "$WORK/err.txt"; then
  echo "unknown YAML key was accepted"; exit 1
fi
grep -q "unknown key 'stepz'" "$WORK/err.txt"
# Bad input exits with code 2 and names the path.
set +e
"$BIN" info "$WORK/nope" 2> "$WORK/err2.txt"
rc=$?
set -e
[ "$rc" -eq 2 ] || { echo "expected exit code 2, got $rc"; exit 1; }
grep -q "$WORK/nope" "$WORK/err2.txt"
echo "cli smoke: all checks passed"
