#!/usr/bin/env bash
# The model cards exactly as a push would upload them (dry runs, no network), copied to reports/cards/ for review:
# the shipped student (weights + the app's ONNX file) and every member of its teacher, each in its own repository
# (the first is dermohelper-teacher, the others dermohelper-teacher-member2, ...), each teacher card linking the
# others. Run by train/ship.sh; alone, for the shipped GPU models:
#   RUNS=runs/gpu_ens TEACHER=runs/gpu/teacher/best,runs/gpu/baseline/best bash train/cards.sh
set -euo pipefail
RUNS=${RUNS:-runs/cpu}
SHIP=${SHIP:-magkd}
TEACHER=${TEACHER:-$RUNS/teacher/best}
OWNER=${OWNER:-dermohelper}
mkdir -p reports/cards && rm -rf outputs/hub_student outputs/hub_teacher*  # dry-run folders must be new
python -m dermo.hub push-model --model $RUNS/$SHIP/best --onnx dermo/assets --repo $OWNER/dermohelper-student \
  --dry-run outputs/hub_student
cp outputs/hub_student/README.md reports/cards/student.md
IFS=, read -ra MEMBERS <<< "$TEACHER"
if [ "$SHIP" = baseline ]; then MEMBERS=("${MEMBERS[0]}"); fi  # no distillation: the teacher stands alone
REPOS=$OWNER/dermohelper-teacher
for ((i = 2; i <= ${#MEMBERS[@]}; i++)); do REPOS+=",$OWNER/dermohelper-teacher-member$i"; done
IFS=, read -ra REPO_LIST <<< "$REPOS"
rm -f reports/cards/teacher-member*.md
for i in "${!MEMBERS[@]}"; do
  name=teacher$([ "$i" = 0 ] || echo "-member$((i + 1))")
  python -m dermo.hub push-model --model "${MEMBERS[$i]}" --repo "${REPO_LIST[$i]}" \
    $([ "$SHIP" = baseline ] || echo "--teacher-of $RUNS/$SHIP/best --member-repos $REPOS") \
    --dry-run "outputs/hub_$name"
  cp "outputs/hub_$name/README.md" "reports/cards/$name.md"
done
