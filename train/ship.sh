#!/usr/bin/env bash
# From trained runs to everything we ship and quote: calibration on validation, ONNX export into dermo/assets,
# the out-of-distribution detector for the shipped file, and every report under reports/.
#   bash train/ship.sh [RUNS]        # RUNS defaults to runs/cpu (teacher/, baseline/, magkd/ from train/cpu_reduced.sh)
set -euo pipefail
RUNS=${1:-runs/cpu}
DATA=${DATA:-../shared/data/ham10000}
CACHE=$RUNS/logits_cache
python -m dermo.evaluate --model $RUNS/magkd/best --data $DATA --split validation --calibrate \
  --out reports/evaluation/magkd-validation --cache $CACHE --no-progress
python -m train.export --model $RUNS/magkd/best --out dermo/assets
python -m dermo.ood --model dermo/assets
python -m train.report --runs $RUNS --cache $CACHE
python benchmarks/inference.py --json reports/inference.json --md reports/inference.md
python benchmarks/quality_gate.py --json reports/quality_gate.json
python benchmarks/app.py --json reports/app_benchmark.json
# Model cards exactly as a push would upload them (no network): kept in reports/cards/ for review.
mkdir -p reports/cards
python -m dermo.hub push-model --model $RUNS/magkd/best --onnx dermo/assets --repo dermohelper/dermohelper-student \
  --dry-run outputs/hub_student
python -m dermo.hub push-model --model $RUNS/teacher/best --repo dermohelper/dermohelper-teacher \
  --dry-run outputs/hub_teacher
cp outputs/hub_student/README.md reports/cards/student.md
cp outputs/hub_teacher/README.md reports/cards/teacher.md
