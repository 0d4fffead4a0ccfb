#!/usr/bin/env bash
# Issue 5 in ONE device call of <= 10 minutes, with the teacher the GPU run shipped from (the ensemble of
# models/gpu/teacher and models/gpu/baseline, carried as fp16 copies): the seed's 36-config grid by successive
# halving, then the winner and the untuned config retrained and evaluated once on test (train/gpu_search.sh).
# Prepare here:
#   python -m train.pack_carry --models mobilenetv2_100 --trained models/gpu/teacher models/gpu/baseline
#   bash train/travel.sh stash
# Device call: carry [".carry/ham10000.tar.gz", ".carry/weights/mobilenetv2_100.safetensors", ".carry/models"],
#   command: PYTHONUNBUFFERED=1 bash train/gpu_search_call.sh 2>&1 | tee $OUT/log
# then: bash train/travel.sh restore, and unpack: cat search.tar.* | tar -xf -   (runs/search/report/search.md/.json,
#   the trial journal runs/search/trials.jsonl, and the winner's and untuned student's folders under runs/search/;
#   copy the report to reports/search.md/.json). The search itself keeps to LIMIT - 45 s (--time-limit: trials and
#   final runs still going shortly before are stopped, and a winner whose retrain does not fit is its trial's model,
#   evaluated on test all the same); should it still be running at LIMIT - 25 s it is killed, and what it had
#   finished is packed all the same (the report is rewritten after every trial; the winner's trial model, when no
#   final one was saved, as runs/search/winner_trial/).
# Ship the winner only if it beats the shipped student (models/gpu/magkd_ensemble, validation AUROC 0.9099) on
# validation: the search's own untuned row is its base config at the search's budget, not the shipped run.
# Ship it with VERSION=0.2.0 bash train/ship.sh ...: every model shipped so far said 0.1.0 (only the sha256 told them
#   apart), and train.export now refuses other weights under the shipped name and version.
# CPU smoke test of this script (tiny data, 2x2 space):
#   OUT=/tmp/sout SPACE=train/spaces/smoke_2x2.json RUNGS=1,2 ETA=2 FINAL_EPOCHS=1 CONCURRENCY=1 BENCH= IMG=64 \
#   SEARCH_EXTRA="--limit_train 64 --limit_eval 64 --batch_size 16 --mixed_precision no --num_workers 2 --n_boot 20" \
#   bash train/gpu_search_call.sh
set -euo pipefail
T_CALL=$(date +%s)
LIMIT=${LIMIT:-570}  # seconds this script may take (the device call's limit is 600): the search is cut short at
# LIMIT - 25 so that whatever it finished (report, journal, models) is always packed and comes back
DEV_OUT=${OUT:-/tmp/out}
mkdir -p /tmp/data "$DEV_OUT"
[ -d /tmp/data/ham10000 ] || tar -xzf .carry/ham10000.tar.gz -C /tmp/data
export DERMO_PRETRAINED_DIR=$PWD/.carry/weights PYTHONPATH=$PWD
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python -c "import sys, torch, timm, accelerate; print(sys.version.split()[0], torch.__version__, timm.__version__, accelerate.__version__)"
status=0
LEFT=$(( LIMIT - 25 - ($(date +%s) - T_CALL) ))
OUT=runs/search REPORT=runs/search/report/search TEACHER=${TEACHER:-.carry/models/gpu/teacher,.carry/models/gpu/baseline} \
  EXTRA="--data_dir /tmp/data/ham10000 --num_workers 16 --time-limit $(( LEFT - 20 )) ${SEARCH_EXTRA:-}" \
  timeout --kill-after=10 "$LEFT" bash train/gpu_search.sh || status=$?
[ "$status" = 124 ] && echo "search cut short after $LEFT s (timeout): packing what it finished"
echo "search exit $status at $(( $(date +%s) - T0 )) s"
# Killed after the winner was chosen, before its final model was evaluated (runs/search/winner may then be a partial
# retrain): bring the winning trial's own model, which the tar leaves out with the other trials otherwise.
W=$(python -c "import json; r = json.load(open('runs/search/report/search.json'))
print('' if (r.get('final') or {}).get('winner') else (r.get('winner') or {}).get('id', ''))" 2>/dev/null || true)
if [ -n "$W" ]; then
  if [ -f "runs/search/trials/$W/best/model.safetensors" ]; then
    rm -rf runs/search/winner_trial && mkdir -p runs/search/winner_trial
    cp -r "runs/search/trials/$W/best" "runs/search/trials/$W/history.json" runs/search/winner_trial/ 2>/dev/null || true
    echo "$W" > runs/search/winner_trial/TRIAL
    echo "no final winner model: packed trial $W's as runs/search/winner_trial"
  fi
fi
# Everything that belongs to the search in one tar of 15 MiB parts (the device tool returns at most 8 files): the
# report, the trial journal, and the retrained winner and untuned students (best/ + metrics, no checkpoints).
tar -cf - --exclude='checkpoints' --exclude='teacher_outputs.pt' --exclude='runs/search/trials' \
  --exclude='runs/search/cache' --exclude='runs/search/bench*' runs/search \
  | split -b 15m -d - "$DEV_OUT/search.tar."
echo "packed at $(( $(date +%s) - T0 )) s"
exit $status
