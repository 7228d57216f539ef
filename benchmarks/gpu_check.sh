#!/usr/bin/env bash
# The GPU check of the fused ECA step, in one call on a lent H100/H200 (about 6 minutes, 8.7 at the step limits;
# ../shared/device/README.md; use timeout_s 560 or more):
#   run: python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
#        export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && bash benchmarks/gpu_check.sh
#   carry: [".whl"]  (timm's wheel, downloaded here beforehand)
# 1. correctness: the Triton kernels against timm's plain blocks (fp32 gradients, bf16 vs plain bf16, compile);
# 2. eca_resnet50 against its baselines, bf16 and fp32, channels_last, batch 256, training and inference;
# 3. eca_resnet18 and eca_mobilenetv2 in bf16 channels_last;
# 4. torch.compile, bf16, eca_resnet50 against compiled resnet50 (last: it takes longest).
# Every step writes its JSON to $OUT as soon as it ends (and its output to $OUT/gpu_check.log), so a step cut short
# loses only itself.
# STEPS="bench50 compile" reruns a subset.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
STEPS=${STEPS:-"correctness bench50 bench18 benchmbv2 compile"}
mkdir -p "$OUT"
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace('NVIDIA ', '').split()[0].lower())")
day=$(date +%F)
LOG="$OUT/gpu_check.log"  # one log: the device returns at most 8 files (this log and 5 JSON files)
nvidia-smi > "$LOG" 2>&1
BENCH=(python3 -m eca_timm.cli bench --device cuda --batch-size 256 --img-size 224)  # a command: timeout runs it
step() {  # step NAME SECONDS COMMAND...: run it with a time limit, appending to $LOG
  local name=$1 limit=$2
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name ($(date +%T))" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc" | tee -a "$LOG"
}
step correctness 90 python3 benchmarks/gpu_check.py --out "$OUT/cuda-correctness-$gpu-$day.json"
step bench50 120 "${BENCH[@]}" --model eca_resnet50 --phases infer train --modes channels_last --precisions bf16 fp32 \
  --rounds 5 --min-run-time 0.3 --output "$OUT/cuda-$gpu-resnet50-eager-$day.json"
step bench18 40 "${BENCH[@]}" --model eca_resnet18 --phases infer train --modes channels_last --precisions bf16 \
  --rounds 3 --min-run-time 0.3 --output "$OUT/cuda-$gpu-resnet18-$day.json"
step benchmbv2 30 "${BENCH[@]}" --model eca_mobilenetv2 --phases infer train --modes channels_last --precisions bf16 \
  --rounds 3 --min-run-time 0.3 --output "$OUT/cuda-$gpu-mobilenetv2-$day.json"
step compile 240 "${BENCH[@]}" --model eca_resnet50 --include eca_resnet50 --phases infer train --modes compile \
  --precisions bf16 --rounds 3 --min-run-time 0.3 --output "$OUT/cuda-$gpu-resnet50-compile-$day.json"
ls -l "$OUT"
