#!/usr/bin/env bash
# The two students of the shipped recipe (mobilenetv2_100, 8 epochs; without distillation, and with MAG-KD from the
# ensemble teacher of train/cpu_ensemble_teacher.sh: Lite0 160 px teacher + 8-epoch 128 px plain student, mean logits,
# outputs cached) at another image size or seed, everything else as the seed-0 128 px runs:
#   IMG=160 bash train/cpu_students_ensemble.sh     # more pixels  -> runs/cpu_160,   reports/cpu_160
#   SEED=1 bash train/cpu_students_ensemble.sh      # another seed -> runs/cpu_seed1, reports/cpu_seed1
set -euo pipefail
IMG=${IMG:-128}
SEED=${SEED:-0}
TAG=${TAG:-$([ "$IMG" != 128 ] && echo "$IMG" || echo "seed$SEED")}
OUT=${OUT:-runs/cpu_$TAG}
LONG=${LONG:-runs/cpu_long}
ENSEMBLE="$LONG/teacher/best,$LONG/baseline/best"
COMMON="--img_size $IMG --epochs 8 --batch_size 32 --lr 5e-4 --seed $SEED --progress false --pretrained true --backbone mobilenetv2_100"
mkdir -p $OUT
[ -f $OUT/baseline/metrics.json ] || python -m train.train $COMMON --name dermohelper-student-baseline \
  --output_dir $OUT/baseline
[ -f $OUT/magkd/metrics.json ] || python -m train.train $COMMON --name dermohelper-student-ensemble-kd \
  --teacher "$ENSEMBLE" --teacher_cache memory --output_dir $OUT/magkd
python -m train.report --runs $OUT --teacher "$ENSEMBLE" --out reports/cpu_$TAG --shipped '' \
  --cache runs/cpu/logits_cache --no-progress \
  --note "CPU students at $IMG px with seed $SEED (IMG=$IMG SEED=$SEED bash train/cpu_students_ensemble.sh): mobilenetv2_100, 8 epochs, without and with MAG-KD from the ensemble teacher of train/cpu_ensemble_teacher.sh (Lite0 160 px teacher + 8-epoch 128 px plain student, mean logits, cached outputs)"
for r in baseline magkd; do
  mkdir -p models/cpu_$TAG/$r && cp $OUT/$r/{metrics,history,run_config}.json models/cpu_$TAG/$r/
done
