#!/usr/bin/env bash
# Is the shipped recipe's edge more than seed noise? The two students of train/cpu_students_long.sh (plain) and
# train/cpu_ensemble_teacher.sh (MAG-KD from the Lite0 + plain-student ensemble) again with seed 1 (same teacher,
# budget and everything else). Report: reports/cpu_seed1/.
set -euo pipefail
OUT=${OUT:-runs/cpu_seed1}
LONG=${LONG:-runs/cpu_long}
ENSEMBLE="$LONG/teacher/best,$LONG/baseline/best"
COMMON="--img_size 128 --epochs 8 --batch_size 32 --lr 5e-4 --seed 1 --progress false --pretrained true --backbone mobilenetv2_100"
mkdir -p $OUT
[ -f $OUT/baseline/metrics.json ] || python -m train.train $COMMON --name dermohelper-student-baseline \
  --output_dir $OUT/baseline
[ -f $OUT/magkd/metrics.json ] || python -m train.train $COMMON --name dermohelper-student-ensemble-kd \
  --teacher "$ENSEMBLE" --teacher_cache memory --output_dir $OUT/magkd
python -m train.report --runs $OUT --teacher "$ENSEMBLE" --out reports/cpu_seed1 --shipped '' \
  --cache runs/cpu/logits_cache --no-progress \
  --note "CPU students with seed 1 (train/cpu_seed1.sh): mobilenetv2_100, 128 px, 8 epochs, without and with MAG-KD from the ensemble teacher of train/cpu_ensemble_teacher.sh (cached outputs); otherwise as the seed-0 runs"
for r in baseline magkd; do
  mkdir -p models/cpu_seed1/$r && cp $OUT/$r/{metrics,history,run_config}.json models/cpu_seed1/$r/
done
