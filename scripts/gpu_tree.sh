#!/usr/bin/env bash
# Readies the working tree for the GPU machine (issue #16). The device tool
# sends the working tree, tracked files included, only while it holds at most
# 64 MiB, and the four v2 reference models (29 MB each) alone exceed that;
# scripts/gpu_check.sh needs none of them.
#   bash scripts/gpu_tree.sh away   moves them to $STASH and prints what travels
#   bash scripts/gpu_tree.sh back   puts them back (git status is clean again)
#   bash scripts/gpu_tree.sh size   prints what would travel (.gpu_deps included)
# STASH defaults to /tmp/spindlekv-gpu-stash; nothing is deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
STASH=${STASH:-/tmp/spindlekv-gpu-stash}
LIMIT=$((64 * 1024 * 1024))
MODELS=(data/reference-model-v2/model.safetensors
        data/reference-model-v2-stages/base/model.safetensors
        data/reference-model-v2-stages/induct/model.safetensors
        data/reference-model-v2-stages/lookup/model.safetensors)

travelling_bytes() {
  local files bytes
  files=$(git ls-files -co --exclude-standard | while read -r f; do [[ -f $f ]] && echo "$f"; done)
  bytes=$(echo "$files" | tr '\n' '\0' | du --files0-from=- -cb 2> /dev/null | tail -n 1 | cut -f1)
  if [[ -d .gpu_deps ]]; then bytes=$((bytes + $(du -sb .gpu_deps | cut -f1))); fi
  echo "$bytes"
}

report() {
  local bytes
  bytes=$(travelling_bytes)
  echo "gpu_tree: $((bytes / 1024 / 1024)) MiB would travel (tree + .gpu_deps; limit 64 MiB)"
  if ((bytes > LIMIT)); then
    echo "gpu_tree: over the limit" >&2
    return 1
  fi
}

case ${1:-} in
  away)
    for f in "${MODELS[@]}"; do
      if [[ -f $f ]]; then
        mkdir -p "$STASH/$(dirname "$f")"
        mv "$f" "$STASH/$f"
      fi
    done
    report
    ;;
  back)
    for f in "${MODELS[@]}"; do
      if [[ -f $STASH/$f ]]; then mv "$STASH/$f" "$f"; fi
    done
    git diff --quiet -- "${MODELS[@]}" || { echo "gpu_tree: a model differs from git's" >&2; exit 1; }
    echo "gpu_tree: the models are back"
    ;;
  size)
    report
    ;;
  *)
    echo "usage: bash scripts/gpu_tree.sh away|back|size" >&2
    exit 2
    ;;
esac
