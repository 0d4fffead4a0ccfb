#!/usr/bin/env bash
# CPU smoke run of train.search on reduced real data (NOT the real search, which is train/gpu_search.sh): 600
# training / 300 validation / 300 test images at 64 px, a 2x2 space, rungs 1,2, eta 2. The teacher is a small
# stand-in trained first on the same reduced data (ImageNet-initialised tf_efficientnet_lite0, 2 epochs), so the run
# is reproducible anywhere; TEACHER=runs/cpu/teacher/best uses the CPU run's teacher instead (OUT must then differ).
# Writes reports/search_cpu_smoke.md/.json. One intra-op thread: on the shared 2-core machine it is much faster.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-runs/search_cpu_smoke}
DATA="--img_size 64 --limit_train 600 --limit_eval 300 --seed 0 --progress false"
TEACHER=${TEACHER:-}
if [ -z "$TEACHER" ]; then
  TEACHER=$OUT/teacher/best
  python -m train.train $DATA --backbone tf_efficientnet_lite0 --pretrained true --epochs 2 --batch_size 16 \
    --lr 1e-3 --name smoke-teacher --output_dir "$OUT/teacher"
fi
python -m train.search --teacher "$TEACHER" --space train/spaces/smoke_2x2.json --rungs 1,2 --eta 2 \
  --final-epochs 2 --out "$OUT" --report reports/search_cpu_smoke --n_boot 200 \
  --label "CPU smoke run on reduced data (600/300/300 images at 64 px, teacher $TEACHER), NOT the real search" \
  $DATA --backbone mobilenetv2_100 --pretrained true --lr 5e-4 --batch_size 16
