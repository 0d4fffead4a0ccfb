#!/usr/bin/env bash
# Does the student gain from more pixels? The 8-epoch students of train/cpu_students_long.sh and
# train/cpu_ensemble_teacher.sh (mobilenetv2_100, seed 0, same schedule) at 160 px instead of 128 px: without
# distillation, and with MAG-KD from the same ensemble teacher (Lite0 160 px teacher + 128 px baseline student,
# mean logits, outputs cached). Report: reports/cpu_160/.
set -euo pipefail
OUT=${OUT:-runs/cpu_160}
LONG=${LONG:-runs/cpu_long}
ENSEMBLE="$LONG/teacher/best,$LONG/baseline/best"
COMMON="--img_size 160 --epochs 8 --batch_size 32 --lr 5e-4 --seed 0 --progress false --pretrained true --backbone mobilenetv2_100"
mkdir -p $OUT
[ -f $OUT/baseline/metrics.json ] || python -m train.train $COMMON --name dermohelper-student-baseline \
  --output_dir $OUT/baseline
[ -f $OUT/magkd/metrics.json ] || python -m train.train $COMMON --name dermohelper-student-ensemble-kd \
  --teacher "$ENSEMBLE" --teacher_cache memory --output_dir $OUT/magkd
python -m train.report --runs $OUT --teacher "$ENSEMBLE" --out reports/cpu_160 --shipped '' \
  --cache runs/cpu/logits_cache --no-progress \
  --note "CPU students at 160 px (train/cpu_students_160.sh): mobilenetv2_100, 8 epochs, seed 0, without and with MAG-KD from the ensemble teacher of train/cpu_ensemble_teacher.sh (Lite0 160 px teacher + 8-epoch 128 px baseline student, mean logits, cached outputs)"
for r in baseline magkd; do
  mkdir -p models/cpu_160/$r && cp $OUT/$r/{metrics,history,run_config}.json models/cpu_160/$r/
done
