#!/usr/bin/env bash
# Issue 5's last step at CPU scale: the winner of the reduced CPU search (reports/search_cpu_reduced.md, trial t028:
# lr 1e-3, batch 16, alpha/beta/gamma 0.5/0.3/0.2, class weights [1, 4]) retrained on the full budget of the shipped
# recipe (mobilenetv2_100, 128 px, 8 epochs, seed 0, the whole training split, MAG-KD from the same ensemble teacher,
# outputs cached), beside the untuned MAG-KD student, which is the shipped one (runs/cpu_ensemble/magkd: lr 5e-4,
# batch 32, 0.4/0.3/0.3, [1, 4]). Per issue 5 the tuned student replaces it only if it wins on validation (both the
# search's selection score and validation AUROC are reported; test figures do not choose). About 15 minutes.
# Writes runs/cpu_winner/ and reports/cpu_winner/ (baseline row = the plain 8-epoch student of the same seed).
set -euo pipefail
OUT=${OUT:-runs/cpu_winner}
LONG=${LONG:-runs/cpu_long}
ENSEMBLE="$LONG/teacher/best,$LONG/baseline/best"
mkdir -p $OUT
[ -f $OUT/magkd/metrics.json ] || python -m train.train --img_size 128 --epochs 8 --seed 0 --progress false \
  --pretrained true --backbone mobilenetv2_100 --lr 1e-3 --batch_size 16 --alpha 0.5 --beta 0.3 --gamma 0.2 \
  --class_weights 1,4 --name dermohelper-student-tuned-kd --teacher "$ENSEMBLE" --teacher_cache memory \
  --output_dir $OUT/magkd
ln -sfn "$(realpath $LONG/teacher)" $OUT/teacher
ln -sfn "$(realpath $LONG/baseline)" $OUT/baseline
python -m train.report --runs $OUT --teacher "$ENSEMBLE" --out reports/cpu_winner --shipped '' \
  --cache runs/cpu/logits_cache --no-progress \
  --note "CPU experiment (train/cpu_search_winner.sh): the reduced CPU search's winner config (lr 1e-3, batch 16, alpha/beta/gamma 0.5/0.3/0.2, class weights [1, 4]) trained with the shipped recipe's budget (mobilenetv2_100, 128 px, 8 epochs, seed 0, MAG-KD from the Lite0 + plain-student ensemble); the untuned MAG-KD student is reports/cpu_ensemble/'s"
mkdir -p models/cpu_winner/magkd && cp $OUT/magkd/{metrics,history,run_config}.json models/cpu_winner/magkd/
