#!/usr/bin/env bash
# Issue 5 on CPU, reduced: the seed's whole 36-configuration grid (train/spaces/seed_grid.json) searched on real data
# with the shipped model's teacher (the CPU ensemble: Lite0 160 px + the plain 8-epoch student, mean logits), but on the
# first 2,500 images of the (lesion-grouped) training split at 64 px, two trials at once on the 2-core machine. The
# validation and test splits are whole. It exercises every part of the real search (36 -> 12 -> 4 over rungs 1, 3, 9
# epochs, teacher outputs computed once, the winner retrained from scratch beside the untuned student, one test
# evaluation) and shows what the grid does at this scale; it is NOT the GPU search (train/gpu_search.sh) and its
# models are not shipped (64 px, reduced data). Writes reports/search_cpu_reduced.md/.json. About 21 minutes (README).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-runs/search_cpu_reduced}
TEACHER=${TEACHER:-runs/cpu_long/teacher/best,runs/cpu_long/baseline/best}
DEADLINE=${DEADLINE:-2400}
python -m train.search --teacher "$TEACHER" --space train/spaces/seed_grid.json --rungs 1,3,9 --eta 3 \
  --final-epochs 9 --concurrency 2 --deadline "$DEADLINE" --out "$OUT" --report reports/search_cpu_reduced \
  --label "CPU run on reduced data (2,500 training images at 64 px, whole validation and test splits), NOT the GPU search" \
  --img_size 64 --limit_train 2500 --seed 0 --progress false \
  --backbone mobilenetv2_100 --pretrained true --lr 5e-4 --batch_size 32 --name search-cpu-reduced
