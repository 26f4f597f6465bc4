#!/usr/bin/env bash
# Issue 13's TensorBoard check for CI: our event files read back by TensorBoard's own readers.
# Writes the runs of `cargo test -p ferrograd-train --test all tensorboard::` (scalars, histograms,
# HParams, a resumed run) and one epoch of the main job with --logdir, then checks every scalar,
# exactly, with train/scripts/check_tensorboard.py.
#
#   bash train/scripts/ci_tensorboard.sh                   # makes target/tb-venv with pip
#   PYTHON=/path/to/python bash train/scripts/ci_tensorboard.sh   # a python with tensorboard
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${PYTHON:-}" ]; then
  if [ ! -x target/tb-venv/bin/python ]; then
    python3 -m venv target/tb-venv
    target/tb-venv/bin/pip install --quiet tensorboard numpy
  fi
  PYTHON=target/tb-venv/bin/python
fi
"$PYTHON" -c "import tensorboard, numpy" || { echo "ci_tensorboard: $PYTHON lacks tensorboard/numpy" >&2; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
FERROGRAD_TB_CHECK_DIR="$dir" cargo test -p ferrograd-train --test all tensorboard::
cargo run --release --example mnist_mlp -- --epochs 1 --history "$dir/history.csv" --logdir "$dir/mnist_mlp"
"$PYTHON" train/scripts/check_tensorboard.py "$dir"
