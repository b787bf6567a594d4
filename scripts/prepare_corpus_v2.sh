#!/usr/bin/env bash
# Builds the text and the tokenizer of the second reference model
# (data/reference-model-v2; see its MODEL_CARD.md) from Debian packages.
#   1. installs the packages that hold the text (as root; otherwise says which);
#   2. scripts/prepare_corpus_v2.py writes data/corpus-v2/train.txt and the
#      committed splits under calibration/v2/;
#   3. with --retrain-tokenizer (or when it is missing), Debian's spm_train
#      trains the SentencePiece BPE tokenizer on the training split:
#      data/tokenizer-v2/tokenizer.model (8192 pieces, identity normalisation,
#      digits split, byte fallback, Llama-2 ids: <unk> 0, <s> 1, </s> 2).
#      The tokenizer is committed: spm_train's multi-threaded run is not
#      bit-reproducible, and a run continued later must see the same ids.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(sword-text-web libsword-utils bible-kjv python3.11-doc debian-reference-en gnu-standards jargon-text sentencepiece)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  else
    echo "prepare_corpus_v2: install first: apt-get install ${missing[*]}" >&2
    exit 2
  fi
fi
python3 scripts/prepare_corpus_v2.py
if [[ "${1:-}" == --retrain-tokenizer || ! -s data/tokenizer-v2/tokenizer.model ]]; then
  mkdir -p data/tokenizer-v2
  spm_train --input=data/corpus-v2/train.txt --model_prefix=data/tokenizer-v2/tokenizer \
    --model_type=bpe --vocab_size=8192 --normalization_rule_name=identity --character_coverage=0.9995 \
    --split_digits=true --byte_fallback=true --allow_whitespace_only_pieces=true \
    --remove_extra_whitespaces=false --input_sentence_size=2000000 --shuffle_input_sentence=true \
    --max_sentence_length=8192 --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
    --num_threads="$(nproc)" --seed_sentencepiece_size=1000000 >data/corpus-v2/spm_train.log 2>&1
fi
echo "tokenizer: data/tokenizer-v2/tokenizer.model ($(grep -c . data/tokenizer-v2/tokenizer.vocab) pieces)"
