#!/bin/bash
# Session s16 on the H100 (issue #7): `--memory-format auto` made NHWC the default of an untuned fused plan of a
# convolution model. This checks it on the GPU (the fused and channels_last GPU tests) and re-runs the two groups
# whose figures came from the first session's code (ResNet-50 and DenseNet-121, fp32, batch 1), now with every
# method in one run, opara_fused_cl (what `--fuse inductor` gives those models by default) included.
# Started in the background (setsid) on the device and polled; results in $1.
set -u
OUT=$1
cd "$(dirname "$0")/../.."
F=cudagraph,torch_compile,opara,opara_tuned,opara_fused,opara_fused_cl,opara_fused_tuned
run() { python3 benchmarks/run.py --tag s16 --progress --out "$OUT" "$@"; }
python3 -m pytest -m gpu tests/gpu/test_fused.py tests/gpu/test_gpu_channels_last.py -q -p no:cacheprovider \
  --durations=5 > "$OUT/pytest-gpu.log" 2>&1
echo "gpu tests rc=$?"
run --models resnet50 --batches 1 --dtypes float32 --methods $F
run --models densenet121 --batches 1 --dtypes float32 --methods $F
echo "s16 done"
