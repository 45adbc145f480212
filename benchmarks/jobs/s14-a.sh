#!/bin/bash
# Session s14, machine A: worker start-up probe, then the NASNet-A Large groups and ResNet-50 fp16 (issue #7).
# Started in the background on the device (setsid); results land in $1.
set -u
OUT=$1
cd "$(dirname "$0")/../.."
python3 benchmarks/worker_startup.py --workers 1,16 --out "$OUT"
FUSED=cudagraph,torch_compile,opara,opara_tuned,opara_fused,opara_fused_tuned
python3 benchmarks/run.py --tag s14 --progress --out "$OUT" --models nasnet --batches 1 --dtypes float32 \
  --methods eager,ort_cuda,$FUSED
python3 benchmarks/run.py --tag s14 --progress --out "$OUT" --models nasnet --batches 1 --dtypes float16 --methods $FUSED
python3 benchmarks/run.py --tag s14 --progress --out "$OUT" --models resnet50 --batches 1 --dtypes float16 --methods $FUSED
echo JOB-DONE
