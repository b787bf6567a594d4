#!/usr/bin/env bash
# Installs every build and runtime dependency of SpindleKV from Debian packages.
# Idempotent; run as root (or with sudo available). No network but Debian's mirrors.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev
  libfaiss-dev
  libhdf5-dev
  libcli11-dev
  libyaml-cpp-dev
  libgtest-dev libgmock-dev
  nlohmann-json3-dev
  libspdlog-dev libfmt-dev
  libsentencepiece-dev sentencepiece
  libxxhash-dev
  # Tests check that captures are readable by h5py, without this project.
  python3-h5py python3-numpy
  # Public-domain English text of the reference model (scripts/prepare_corpus.sh).
  bible-kjv bible-kjv-text
  # Without an optimised BLAS Debian links the reference BLAS and both FAISS
  # k-means and LibTorch matmul run about 20x slower.
  libopenblas0-openmp libopenblas-openmp-dev
  # RULER's common-words task draws its words from the Debian word list.
  wamerican
  # `spindlekv eval` draws its plots with gnuplot (PNG through cairo).
  gnuplot-nox
  clang-format
  # libFuzzer targets (scripts/fuzz.sh): clang and its fuzzer/sanitizer runtimes.
  clang-14 libclang-rt-14-dev
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# Make sure the BLAS alternative points at OpenBLAS (OpenMP flavour), not the
# reference implementation.
for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
  cand=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-openmp | head -n1 || true)
  if [ -n "$cand" ]; then $SUDO update-alternatives --set "$alt" "$cand" >/dev/null; fi
done
echo "setup: BLAS -> $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown)"
