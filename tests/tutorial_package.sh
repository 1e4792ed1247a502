#!/bin/bash
# Installs liandan from the build tree into a scratch prefix, builds docs/tutorial against it with
# find_package(liandan), and runs the tutorial's training loop (which fails unless the loss falls).
# Usage: tests/tutorial_package.sh BUILD_DIR TUTORIAL_DIR SCRATCH
set -euo pipefail
build=$1 tutorial=$2 scratch=$3
rm -rf "$scratch" && mkdir -p "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S "$tutorial" -B "$scratch/build" -DCMAKE_PREFIX_PATH="$scratch/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
make -C "$scratch/build" >/dev/null
cd "$scratch" && ./build/train_tiny_lm
test -s "$scratch/tiny_lm.safetensors"
"$scratch/prefix/bin/liandan" info >/dev/null
