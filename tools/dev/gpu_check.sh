#!/usr/bin/env bash
# GPU check: the demo under MirroredStrategy (all local GPUs) in float32, then with
# bfloat16 + XLA, then float16 (loss scaling) + XLA; prints each one's accuracy and
# the training images/s it logged.
#
#   pip install -e ".[cuda,demo]" && tools/dev/gpu_check.sh [OUT_DIR] [STEPS]
# (BIWAA_GPU_CHECK_ALLOW_CPU=1 runs it on the CPU with one_device, to check the
# script itself: XLA under MirroredStrategy needs GPUs.)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/biwaa_gpu_check}
steps=${2:-800}
strategy=mirrored
[ "${BIWAA_GPU_CHECK_ALLOW_CPU:-0}" = 1 ] && strategy=one_device
python - <<'EOF'
import os
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "GPUs:", [g.name for g in gpus])
if not gpus and os.environ.get("BIWAA_GPU_CHECK_ALLOW_CPU") != "1":
  raise SystemExit("error: no GPU visible to TensorFlow (install with pip install -e \".[cuda,demo]\")")
EOF
printf '%-26s %9s %13s\n' setup accuracy "images/s"
for setup in "float32" "bfloat16+xla" "float16+xla"; do
  case $setup in
    float32) extra=() ;;
    bfloat16+xla) extra=(--mixed_precision=bfloat16 --jit_compile) ;;
    float16+xla) extra=(--mixed_precision=float16 --jit_compile) ;;
  esac
  dir="$out/$setup"
  log="$out/$setup.log"
  mkdir -p "$out"
  python -m biwaa_tf.main --flagfile=configs/demo.flags --model_dir="$dir" --overwrite \
    --steps_per_run="$steps" --distribution_strategy="$strategy" --noprogress "${extra[@]}" \
    >"$log" 2>&1 || { echo "error: $setup failed, see $log"; exit 1; }
  python - "$dir" "$setup" <<'EOF'
import json, sys
r = json.load(open(f"{sys.argv[1]}/results.json"))["runs"][-1]
print(f"{sys.argv[2]:<26} {100 * r['accuracy']:8.2f}% {r['train_images_per_second']:13.0f}")
EOF
done
