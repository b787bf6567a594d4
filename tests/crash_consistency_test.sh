#!/usr/bin/env bash
# Crash consistency: capture, train and export are killed with SIGKILL (a
# real signal to a real child process). Afterwards no output file exists, or
# the previous one is intact byte for byte, and an interrupted capture
# resumes to a complete file. A full disk and an impossible output path give
# a clear I/O error and no output.
# Usage: crash_consistency_test.sh SPINDLEKV_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
BIN=$1
SRC=$2
WORK=$3
MODEL="$SRC/data/reference-model"
TEXT="$SRC/calibration/calibration.txt"
rm -rf "$WORK"
mkdir -p "$WORK"

wait_for() {  # $1: condition (bash expression), $2: seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do
    if eval "$1"; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for: $1"; exit 1
}

kill_at_commit() {  # $1: stderr log, $2...: spindlekv arguments
  local log=$1; shift
  SPINDLEKV_TEST_COMMIT_DELAY_MS=20000 "$BIN" "$@" > /dev/null 2> "$log" &
  local pid=$!
  wait_for "grep -q 'committing' '$log'" 120
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
}

# 1. Capture killed mid-run: no output, a .partial that --resume completes.
# Killed once --verbose says two sequences are durable (of 40, which take far
# longer than that).
CAP=(capture --model "$MODEL" --text "$TEXT" --out "$WORK/cap.h5" --seq-len 1024
     --max-sequences 40 --flush-every 1 --quiet --threads 1)
"$BIN" "${CAP[@]}" --verbose 2> "$WORK/cap1.err" &
PID=$!
wait_for "grep -q '2 sequences captured' '$WORK/cap1.err'" 120
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
grep -q 'sequences captured' "$WORK/cap1.err"
test ! -e "$WORK/cap.h5" || { echo "killed capture left an output"; exit 1; }
test -f "$WORK/cap.h5.partial"
"$BIN" "${CAP[@]}" --resume 2> "$WORK/cap2.err"
test -f "$WORK/cap.h5"
test ! -e "$WORK/cap.h5.partial"
/usr/bin/python3 - "$WORK/cap.h5" <<'PY'
import h5py, sys
f = h5py.File(sys.argv[1], "r")
assert int(f.attrs["finished"]) == 1, dict(f.attrs)
seqs = set(f["layers/0/sequence_ids"][:].tolist())
assert seqs == set(range(40)), sorted(seqs)
print("capture resumed to", len(seqs), "sequences")
PY

# 2. Train: a first output, then a rerun killed just before its rename.
TRAIN=(train --capture "$WORK/cap.h5" --out "$WORK/books.h5" --max-codewords 32
       --sample-size 2000 --heldout-size 500 --heldout-every 4 --threads 1)
"$BIN" "${TRAIN[@]}" > /dev/null
before=$(md5sum < "$WORK/books.h5")
kill_at_commit "$WORK/train.err" "${TRAIN[@]}" --overwrite --seed 9
test "$(md5sum < "$WORK/books.h5")" = "$before" || { echo "previous codebooks changed"; exit 1; }

# 3. Export killed before its rename: no artifact; with a previous one, intact.
EXPORT=(export --codebooks "$WORK/books.h5" --capture "$WORK/cap.h5" --out "$WORK/a.safetensors")
kill_at_commit "$WORK/export1.err" "${EXPORT[@]}"
test ! -e "$WORK/a.safetensors" || { echo "killed export left an artifact"; exit 1; }
"$BIN" "${EXPORT[@]}" > /dev/null
before=$(md5sum < "$WORK/a.safetensors")
kill_at_commit "$WORK/export2.err" "${EXPORT[@]}" --overwrite --beta 0.1
test "$(md5sum < "$WORK/a.safetensors")" = "$before" || { echo "previous artifact changed"; exit 1; }
"$BIN" inspect "$WORK/a.safetensors" > /dev/null

# 4. A capture with --overwrite killed at its final rename keeps the old file.
before=$(md5sum < "$WORK/cap.h5")
kill_at_commit "$WORK/cap3.err" capture --model "$MODEL" --text "$TEXT" --out "$WORK/cap.h5" \
  --seq-len 256 --max-sequences 2 --quiet --overwrite
test "$(md5sum < "$WORK/cap.h5")" = "$before" || { echo "previous capture changed"; exit 1; }

# 5. A full disk, simulated by a file-size limit (with SIGXFSZ ignored, a
#    write past it fails with EFBIG like ENOSPC): every writer exits with the
#    I/O code 3 naming the file, and leaves no output.
full_disk() {  # $1: output file, $2...: command
  local out=$1; shift
  set +e
  (trap '' XFSZ; ulimit -f 40; "$BIN" "$@" > /dev/null 2> "$WORK/full.err")
  local rc=$?
  set -e
  test "$rc" -eq 3 || { echo "exit $rc (expected 3) for: $*"; cat "$WORK/full.err"; exit 1; }
  grep -q "$(basename "$out")" "$WORK/full.err"
  grep -q "File too large" "$WORK/full.err"
  test ! -e "$out" || { echo "a partial $out was left"; exit 1; }
}
full_disk "$WORK/cap_full.h5" capture --model "$MODEL" --text "$TEXT" --out "$WORK/cap_full.h5" \
  --seq-len 256 --max-sequences 20 --quiet
full_disk "$WORK/books_full.h5" "${TRAIN[@]/$WORK\/books.h5/$WORK/books_full.h5}"
full_disk "$WORK/a_full.safetensors" export --codebooks "$WORK/books.h5" --capture "$WORK/cap.h5" \
  --out "$WORK/a_full.safetensors"

# 6. An output directory that cannot exist (its parent is a file): a clear error.
touch "$WORK/not_a_dir"
set +e
"$BIN" export --codebooks "$WORK/books.h5" --capture "$WORK/cap.h5" \
  --out "$WORK/not_a_dir/a.safetensors" > /dev/null 2> "$WORK/nodir.err"
rc=$?
set -e
test "$rc" -eq 3 || { echo "exit $rc for an impossible output directory"; cat "$WORK/nodir.err"; exit 1; }
grep -q "not_a_dir/a.safetensors" "$WORK/nodir.err"
echo "crash consistency: outputs absent or intact after SIGKILL; capture resumed; full disk refused"
