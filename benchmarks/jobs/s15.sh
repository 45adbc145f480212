#!/bin/bash
# Session s15 on the H100 (issue #7): the groups s14 did not reach, one run.py per group, started in the background
# (setsid) on the device and polled, results in $2. A machine goes back 30 minutes after it starts, so the work is
# split in two parts that each fit one machine: `s15.sh a OUT` and `s15.sh b OUT`.
set -u
PART=$1
OUT=$2
cd "$(dirname "$0")/../.."
F=cudagraph,torch_compile,opara,opara_tuned,opara_fused,opara_fused_tuned
run() { python3 benchmarks/run.py --tag s15 --progress --out "$OUT" "$@"; }
if [ "$PART" = a ]; then
  run --models nasnet --batches 1 --dtypes float16 --methods $F
  run --models densenet121 --batches 1 --dtypes float16 --methods $F
  run --models inception_v3 --batches 32 --dtypes float32 --methods $F
else
  # The GPU tests first: they cover the compile pool and devices.indexed, which no GPU test run has seen yet.
  python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider > "$OUT/pytest-gpu.log" 2>&1
  run --models googlenet,inception_v3 --batches 32 --dtypes float16 --methods $F
fi
echo "s15 part $PART done"
