#!/usr/bin/env bash
# "An ensemble if it pays" (#3). The Lite0 160 px teacher of train/cpu_teachers.sh averaged with the 8-epoch baseline
# student of train/cpu_students_long.sh (mean logits) is above both on validation, so it becomes the teacher of a
# MAG-KD student with that baseline's budget and seed (mobilenetv2_100, 128 px, 8 epochs, seed 0). The ensemble's
# outputs are computed once (teacher_cache=memory) and its attention maps warped with each batch's augmentation.
# Report: reports/cpu_ensemble/ (the teacher row is the ensemble; the baseline is the same run as reports/cpu_long/).
set -euo pipefail
OUT=${OUT:-runs/cpu_ensemble}
LONG=${LONG:-runs/cpu_long}
ENSEMBLE="$LONG/teacher/best,$LONG/baseline/best"
COMMON="--img_size 128 --epochs 8 --batch_size 32 --lr 5e-4 --seed 0 --progress false --pretrained true --backbone mobilenetv2_100"
mkdir -p $OUT
[ -f $OUT/magkd/metrics.json ] || python -m train.train $COMMON --name dermohelper-student-ensemble-kd \
  --teacher "$ENSEMBLE" --teacher_cache memory --output_dir $OUT/magkd
ln -sfn "$(realpath $LONG/baseline)" $OUT/baseline
python -m train.report --runs $OUT --teacher "$ENSEMBLE" --out reports/cpu_ensemble --shipped '' \
  --cache runs/cpu/logits_cache --no-progress \
  --note "CPU ensemble-teacher experiment (train/cpu_ensemble_teacher.sh): the teacher is the mean of the Lite0 160 px teacher (train/cpu_teachers.sh) and the 8-epoch baseline student (train/cpu_students_long.sh); the MAG-KD student (mobilenetv2_100, 128 px, 8 epochs, seed 0) learned from its cached outputs; the baseline is that same 8-epoch student"
mkdir -p models/cpu_ensemble/magkd && cp $OUT/magkd/{metrics,history,run_config}.json models/cpu_ensemble/magkd/
