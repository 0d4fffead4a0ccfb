#!/usr/bin/env bash
# The reduced real-data run that fits a 2-core CPU (no GPU in the session that made it): ImageNet-initialised
# tf_efficientnet_lite0 teacher, mobilenetv2_100 student trained plain and with MAG-KD, 128 px, 3 epochs each,
# same seed and budget for both students. The full run is train/gpu_full.sh.
set -euo pipefail
OUT=${OUT:-runs/cpu}
COMMON="--img_size 128 --epochs 3 --batch_size 32 --lr 5e-4 --seed 0 --progress true --pretrained true"
python -m train.train $COMMON --backbone tf_efficientnet_lite0 --tta true --name dermohelper-teacher \
  --output_dir $OUT/teacher
python -m train.train $COMMON --backbone mobilenetv2_100 --name dermohelper-student-baseline \
  --output_dir $OUT/baseline
python -m train.train $COMMON --backbone mobilenetv2_100 --name dermohelper-student \
  --teacher $OUT/teacher/best --output_dir $OUT/magkd
# What we tried for the distillation gap: the same student and budget, distilled from an ensemble of the teacher
# and the baseline student (logits and attention maps averaged). Not shipped; evaluated on test by
# python -m dermo.evaluate --model $OUT/magkd_ensemble/best --split test (reports/cpu_reduced/evaluation/magkd_ensemble_3ep-test).
if [ "${ENSEMBLE:-1}" = 1 ]; then
  python -m train.train $COMMON --backbone mobilenetv2_100 --name dermohelper-student-ensemble-kd \
    --teacher $OUT/teacher/best,$OUT/baseline/best --output_dir $OUT/magkd_ensemble
fi
