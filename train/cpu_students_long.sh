#!/usr/bin/env bash
# Does MAG-KD pay at a longer student budget? The students of train/cpu_reduced.sh (mobilenetv2_100, 128 px, seed 0)
# for 8 epochs instead of 3, without and with distillation from the Lite0 teacher of train/cpu_teachers.sh (its outputs
# cached, attention maps warped with each batch's augmentation). Same budget and seed for both.
set -euo pipefail
OUT=${OUT:-runs/cpu_long}
TEACHER=${TEACHER:-runs/cpu_teachers/teacher}
COMMON="--img_size 128 --epochs 8 --batch_size 32 --lr 5e-4 --seed 0 --progress false --pretrained true --backbone mobilenetv2_100"
mkdir -p $OUT && rm -rf $OUT/teacher && cp -r $TEACHER $OUT/teacher
python -m train.train $COMMON --name dermohelper-student-baseline --output_dir $OUT/baseline
python -m train.train $COMMON --name dermohelper-student --teacher $OUT/teacher/best --teacher_cache memory \
  --output_dir $OUT/magkd
python -m train.report --runs $OUT --out reports/cpu_long --shipped '' --cache runs/cpu/logits_cache --no-progress \
  --note "CPU students at a longer budget (train/cpu_students_long.sh): mobilenetv2_100, 128 px, 8 epochs, seed 0, without and with MAG-KD from the Lite0 160 px teacher of train/cpu_teachers.sh (cached outputs)"
for r in baseline magkd; do
  mkdir -p models/cpu_long/$r && cp $OUT/$r/{metrics,history,run_config}.json models/cpu_long/$r/
done
