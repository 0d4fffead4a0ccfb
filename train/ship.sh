#!/usr/bin/env bash
# From trained runs to everything we ship and quote: calibration on validation, ONNX export into dermo/assets,
# the out-of-distribution detector for the shipped file, and every report under reports/.
#   bash train/ship.sh [RUNS]        # RUNS defaults to runs/cpu (teacher/, baseline/, magkd/ from train/cpu_reduced.sh)
# VERSION=0.2.0: the shipped bundle's version (train.export refuses other weights under the version already shipped).
# SHIP=baseline ships the student trained without distillation instead, when it is the better one on validation.
# TEACHER=a/best,b/best: the MAG-KD student learned from an ensemble; the reports show it as the teacher (mean logits)
# and each member gets its own Hub repository (dermohelper-teacher, dermohelper-teacher-member2, ...: train/cards.sh).
set -euo pipefail
RUNS=${1:-runs/cpu}
SHIP=${SHIP:-magkd}
DATA=${DATA:-../shared/data/ham10000}
CACHE=$RUNS/logits_cache
TEACHER=${TEACHER:-$RUNS/teacher/best}
python -m dermo.evaluate --model $RUNS/$SHIP/best --data $DATA --split validation --calibrate \
  --out reports/evaluation/$SHIP-validation --cache $CACHE --no-progress
if [ -n "${VERSION:-}" ]; then  # the weights' own config says the version too (the Hub repo serves both as one model)
  python -c 'import json, sys; p = sys.argv[1] + "/config.json"; c = json.load(open(p)); c["version"] = sys.argv[2]
json.dump(c, open(p, "w"), indent=2, sort_keys=True); open(p, "a").write("\n")' "$RUNS/$SHIP/best" "$VERSION"
fi
python -m train.export --model $RUNS/$SHIP/best --out dermo/assets ${VERSION:+--version "$VERSION"}
python -m dermo.ood --model dermo/assets
python -m train.report --runs $RUNS --teacher "$TEACHER" --cache $CACHE ${NOTE:+--note "$NOTE"}  # NOTE: where the runs come from
python benchmarks/inference.py --json reports/inference.json --md reports/inference.md
python benchmarks/quality_gate.py --json reports/quality_gate.json
python benchmarks/app.py --json reports/app_benchmark.json
# Where the heatmaps rest (the cards quote the shipped model's and the teacher's rows).
python -m dermo.focus --model "${TEACHER%%,*}" --model $RUNS/baseline/best \
  $([ "$SHIP" = baseline ] || echo "--model $RUNS/$SHIP/best") --dinov2 --split test --out reports/focus
# Model cards exactly as a push would upload them (no network), kept in reports/cards/ for review.
RUNS=$RUNS SHIP=$SHIP TEACHER=$TEACHER bash train/cards.sh
