#!/usr/bin/env bash
# The full training run on one lent GPU (H100/H200), in ONE device call of <= 10 minutes:
#   teacher (tf_efficientnet_lite0, ImageNet init, 224 px, TTA) -> baseline student and MAG-KD student
#   (mobilenetv2_100, ImageNet init, 224 px, 30 epochs, same seed and budget), then a MAG-KD student of the teacher+baseline
#   ensemble. Measured on one H200 (reports/gpu/gpu_full.log): teacher packed at 152 s, the students at 248, 347 and
#   465 s (the first epoch of each run takes 16-40 s of warm-up, cuDNN kernel search and CUDA start-up included; the
#   later epochs take about 2 s).
# The 36-config search is a second call of its own (SEARCH=1 adds it here, which needs more than one 10-minute call).
# Prepare here:  python -m train.pack_carry   (writes .carry/, git-ignored)
#                bash train/travel.sh stash   (the committed weights and reports would push the tree over 64 MiB)
# Run with the device tool: carry [".carry/ham10000.tar.gz", ".carry/weights/tf_efficientnet_lite0.safetensors",
#   ".carry/weights/mobilenetv2_100.safetensors"], command:
#   PYTHONUNBUFFERED=1 bash train/gpu_full.sh 2>&1 | tee $OUT/log
# then  bash train/travel.sh restore
# What comes back under $OUT: log, teacher.tar.*, baseline.tar.*, magkd.tar.*, magkd_ensemble.tar.* (best/ +
# metrics/history, no optimizer state), each written as soon as its model is trained.
# The GPU image has torch/timm/accelerate/pandas but not datasets/gradio/evaluate: the training path imports none.
set -euo pipefail
DEV_OUT=${OUT:-/tmp/out}  # the device tool's folder that comes back
EPOCHS_T=${EPOCHS_T:-30}
EPOCHS_S=${EPOCHS_S:-30}
mkdir -p /tmp/data "$DEV_OUT" && tar -xzf .carry/ham10000.tar.gz -C /tmp/data
export DERMO_PRETRAINED_DIR=$PWD/.carry/weights PYTHONPATH=$PWD
# EXTRA: more flags, appended (later flags win), e.g. the CPU smoke test of this script:
#   OUT=/tmp/gout EPOCHS_T=1 EPOCHS_S=1 EXTRA="--limit_train 64 --limit_eval 64 --img_size 64 --batch_size 16
#   --mixed_precision no --num_workers 2" bash train/gpu_full.sh
COMMON="--data_dir /tmp/data/ham10000 --num_workers 16 --img_size 224 --batch_size 128 --lr 1e-3 --seed 0 --progress false --pretrained true --mixed_precision bf16 ${EXTRA:-}"
# TEACHER_BACKBONE / TEACHER_SIZE pick a bigger teacher, e.g. tf_efficientnet_lite2 at 260 px (pack it first:
# python -m train.pack_carry --models tf_efficientnet_lite0 tf_efficientnet_lite2 mobilenetv2_100: 60 MiB with the dataset, under the 64 MiB carry).
# On CPU a longer, larger Lite0 teacher was the one that got above the students (reports/cpu_teachers/).
# Each model is packed into $DEV_OUT as soon as it is trained, so a call stopped at its limit still brings back
# what finished. The device tool returns at most 8 files of at most 16 MiB each, so a model's tar is cut into 15 MiB
# parts (<name>.tar.00, .01, ...; a Lite2 teacher needs two). Unpack here with: cat X.tar.* | tar -xf -
pack() {
  tar -cf - --exclude='checkpoints' "$1" | split -b 15m -d - "$DEV_OUT/${2:-$(basename "$1")}.tar."
  echo "packed $1 at $(( $(date +%s) - T0 )) s"
}
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python -c "import sys, torch, timm, accelerate; print(sys.version.split()[0], torch.__version__, timm.__version__, accelerate.__version__)"
python -m train.train $COMMON --epochs $EPOCHS_T --backbone ${TEACHER_BACKBONE:-tf_efficientnet_lite0} --tta true \
  --name dermohelper-teacher --output_dir runs/gpu/teacher ${TEACHER_SIZE:+--img_size $TEACHER_SIZE}
pack runs/gpu/teacher
python -m train.train $COMMON --epochs $EPOCHS_S --backbone mobilenetv2_100 --name dermohelper-student-baseline \
  --output_dir runs/gpu/baseline
pack runs/gpu/baseline
# The teacher runs once over the training images (teacher_cache=memory); its attention maps are warped with each
# batch's augmentation, so the MAG-KD student trains at the baseline's speed.
python -m train.train $COMMON --epochs $EPOCHS_S --backbone mobilenetv2_100 --name dermohelper-student \
  --teacher runs/gpu/teacher/best --teacher_cache memory --output_dir runs/gpu/magkd
pack runs/gpu/magkd
# A second MAG-KD student (ENSEMBLE=0 skips it), distilled from the teacher and the baseline student averaged: on
# CPU that ensemble was above both members on validation, and its seed-0 student beat the plain one (its seed-1
# student did not; reports/cpu_ensemble/, reports/cpu_seed1/). It runs last, so the three models above are packed
# even if the call runs out. To ship it (the reports expect <runs>/baseline and <runs>/magkd):
#   mkdir runs/gpu_ens && ln -s ../gpu/baseline runs/gpu_ens/baseline && ln -s ../gpu/magkd_ensemble runs/gpu_ens/magkd
#   TEACHER=runs/gpu/teacher/best,runs/gpu/baseline/best bash train/ship.sh runs/gpu_ens
if [ "${ENSEMBLE:-1}" = 1 ]; then
  python -m train.train $COMMON --epochs $EPOCHS_S --backbone mobilenetv2_100 --name dermohelper-student-ensemble-kd \
    --teacher runs/gpu/teacher/best,runs/gpu/baseline/best --teacher_cache memory --output_dir runs/gpu/magkd_ensemble
  pack runs/gpu/magkd_ensemble
fi
# SPEED=1: the training-throughput benchmark (issue 3's img/s target), last: it only times, so a call that runs out
# loses nothing else. Its json/md come back as one tar (the device tool returns at most 8 files). In the measured run
# it came after the four models and the call's limit stopped it after three backbones (reports/gpu/train_speed.md
# is rebuilt from the log with --rows-from), so it is off by default; SPEED_ARGS picks the backbones.
if [ "${SPEED:-0}" = 1 ]; then
  mkdir -p runs/gpu/speed
  timeout 150 python benchmarks/train_speed.py --json runs/gpu/speed/train_speed.json \
    --md runs/gpu/speed/train_speed.md ${SPEED_ARGS:-} || echo "speed benchmark failed or timed out"
  pack runs/gpu/speed
fi
if [ "${SEARCH:-0}" = 1 ]; then
  OUT=runs/search REPORT=$DEV_OUT/search TEACHER=runs/gpu/teacher/best \
    EXTRA="--data_dir /tmp/data/ham10000 --num_workers 16" bash train/gpu_search.sh \
    || echo "search failed; training results kept"
  if [ -d runs/search/winner ]; then
    pack runs/search/winner search_winner
  fi
fi
