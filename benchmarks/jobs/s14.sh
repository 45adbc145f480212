#!/bin/bash
# Session s14 on the H100 (issue #7): what ran, one run.py per group, started in the background (setsid) on the
# device and polled, results in $1. The machine goes back 30 minutes after it starts, so the groups ran over three
# machines; each machine ran a slice of these lines (logs: benchmarks/results/suite-s14-*.log).
set -u
OUT=$1
cd "$(dirname "$0")/../.."
F=cudagraph,torch_compile,opara,opara_tuned,opara_fused,opara_fused_tuned
run() { python3 benchmarks/run.py --tag s14 --progress --out "$OUT" "$@"; }
python3 benchmarks/worker_startup.py --workers 1,16 --out "$OUT"
run --models nasnet --batches 1 --dtypes float32 --methods eager,ort_cuda,$F
run --models resnet50 --batches 1 --dtypes float16 --methods $F
run --models bert --batches 1 --dtypes float16 --methods $F
run --models googlenet --batches 32 --dtypes float32 --methods $F
run --models googlenet --batches 8 --dtypes float16 --methods $F
run --models inception_v3 --batches 8 --dtypes float16 --methods $F
# Not reached (the session's device time ran out): the groups BENCHMARKS.md lists as not measured yet.
# run --models nasnet --batches 1 --dtypes float16 --methods $F
# run --models densenet121 --batches 1 --dtypes float16 --methods $F
# run --models inception_v3 --batches 32 --dtypes float32 --methods $F
# run --models googlenet,inception_v3 --batches 32 --dtypes float16 --methods $F
