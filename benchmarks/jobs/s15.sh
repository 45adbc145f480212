#!/bin/bash
# Session s15 on the H100 (issue #7): the groups s14 did not reach, one run.py per group, results in $2.
# Part a ran in the background (setsid) on the first machine and was polled (log: suite-s15-a.log). The GPU tests
# (gpu-tests-20261124T0229.log, with -x --durations=10) and part b then ran as foreground calls, since the
# first machine had under 10 minutes left and part b's second call ran on a fresh one (suite-s15-b.log).
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
  # The GPU tests cover the compile pool and devices.indexed, which no GPU test run had seen before.
  python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider -x --durations=10 > "$OUT/pytest-gpu.log" 2>&1
  run --models googlenet --batches 32 --dtypes float16 --methods $F
  run --models inception_v3 --batches 32 --dtypes float16 --methods $F
fi
echo "s15 part $PART done"
