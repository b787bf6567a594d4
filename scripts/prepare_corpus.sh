#!/usr/bin/env bash
# Builds the reference model's text from the King James Bible (public domain),
# as shipped by Debian's bible-kjv-text package (installed by setup.sh).
#
#   data/corpus/train.txt          training text (not committed; reproducible)
#   calibration/calibration.txt    Proverbs: calibration split (committed)
#   calibration/heldout.txt        Luke: held-out evaluation split (committed)
#
# The three are disjoint by book. Verse references are dropped; the verses of
# a chapter form one paragraph.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bible >/dev/null || { echo "prepare_corpus: 'bible' not found; run scripts/setup.sh" >&2; exit 2; }
mkdir -p data/corpus calibration
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
bible -f "Gen1:1-Rev22:21" > "$tmp"
# $1 is the reference ("Ge1:1"); the book is its leading letters.
split_book() {  # split_book BOOK_REGEX OUT [invert]: keep matching (or, inverted, other) books
  awk -v keep="$1" -v invert="${3:-}" '
    {
      ref = $1; book = ref; sub(/[0-9]+:[0-9]+$/, "", book)
      chap = ref; sub(/:.*$/, "", chap)
      if ((book ~ keep) == (invert == "invert")) next
      text = substr($0, length(ref) + 2)
      if (chap != last && last != "") printf "\n"
      else if (last != "") printf " "
      printf "%s", text
      last = chap
    }
    END { printf "\n" }' "$tmp" > "$2.tmp"
  mv "$2.tmp" "$2"
}
split_book "^Prv$" calibration/calibration.txt
split_book "^Luke$" calibration/heldout.txt
split_book "^(Prv|Luke)$" data/corpus/train.txt invert
wc -c data/corpus/train.txt calibration/calibration.txt calibration/heldout.txt
