#!/usr/bin/env bash
# Issue 5: the seed's 36-configuration MAG-KD grid (train/spaces/seed_grid.json) searched on one GPU inside one
# 10-minute device call, after the teacher was trained there. Writes reports/search.md + reports/search.json and the
# winner's model folder $OUT/winner/best (calibrate + export it only if the report says "ship the winner student").
#
#   TEACHER=runs/gpu/teacher/best bash train/gpu_search.sh
#
# Budget (600 s call; estimates, never measured on a GPU): data decoded once, a concurrency benchmark whose warm
# workers then run the search, successive halving 36 -> 12 -> 4 over rungs of 1, 2, 4 epochs with 8 trials at once
# (no new trial starts after DEADLINE s; a rung the deadline cuts is reported, not ranked: the winner is chosen at
# the last rung every surviving trial finished; an interrupted search keeps every finished trial in
# $OUT/trials.jsonl and rerunning this script on the same machine resumes it), the untuned MAG-KD student (same
# budget, base config below) trained beside the first rung, then the winner on FINAL_EPOCHS (its own trial's model,
# copied to $OUT/winner, when it reached FINAL_EPOCHS at the last rung: a retrain would be the same run again),
# both evaluated once on test. The seed's own rungs 1,3,9 (final 9) need roughly twice the time: RUNGS=1,3,9 FINAL_EPOCHS=9.
# "Untuned" is the base config below (lr 5e-4, batch 32, alpha/beta/gamma 0.4/0.3/0.3, class weights [1, 4]: the
# defaults of the CPU runs), retrained here at the winner's budget, so winner and untuned differ only in the tuned
# values. It is not gpu_full.sh's 40-epoch student (lr 1e-3, batch 128): compare the winner with that one on
# validation before shipping it. Extra RunConfig flags go in EXTRA (e.g. EXTRA="--data_dir /path/ham10000").
set -euo pipefail
TEACHER=${TEACHER:-runs/gpu/teacher/best}
OUT=${OUT:-runs/search}
REPORT=${REPORT:-reports/search}
IMG=${IMG:-224}
RUNGS=${RUNGS:-1,2,4}
ETA=${ETA:-3}
FINAL_EPOCHS=${FINAL_EPOCHS:-4}
CONCURRENCY=${CONCURRENCY:-8}
DEADLINE=${DEADLINE:-330}
BENCH=${BENCH-1,4,8}  # BENCH= (set, empty) skips the concurrency benchmark
EXTRA=${EXTRA:-}
IFS=, read -r -a MEMBERS <<< "$TEACHER"  # an ensemble teacher: folders separated by commas
for m in "${MEMBERS[@]}"; do
  if [ ! -f "$m/config.json" ]; then
    echo "no teacher at $m (train it first, or set TEACHER=...)" >&2
    exit 2
  fi
done
# shellcheck disable=SC2086
python -m train.search --teacher "$TEACHER" --space "${SPACE:-train/spaces/seed_grid.json}" --rungs "$RUNGS" --eta "$ETA" \
  --final-epochs "$FINAL_EPOCHS" --concurrency "$CONCURRENCY" --deadline "$DEADLINE" --out "$OUT" \
  --report "$REPORT" ${BENCH:+--bench-concurrency "$BENCH" --bench-steps 60} \
  --backbone mobilenetv2_100 --img_size "$IMG" --pretrained true --lr 5e-4 --batch_size 32 --seed 0 \
  --name dermohelper-student --label "GPU search (seed grid)" $EXTRA
