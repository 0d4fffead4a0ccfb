#!/usr/bin/env bash
# The device tool sends the working tree (tracked + untracked-not-ignored files) plus `carry`, 64 MiB in all. The
# committed weights and reports alone are over that, and a GPU run needs none of them. So, around a device call:
#   bash train/travel.sh stash     # moves them out of the checkout (and out of the index), prints what would travel
#   ... the device call, carry [".carry"] ...
#   bash train/travel.sh restore   # puts them back and resets the index: `git status` is clean again
# Nothing is committed or deleted; the stash is $STASH (default /tmp/dermo_travel_stash).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
STASH=${STASH:-/tmp/dermo_travel_stash}
PATHS=(models reports docs dermo/assets/model.onnx)
case "${1:-}" in
  stash)
    [ -e "$STASH" ] && { echo "$STASH exists: restore first" >&2; exit 1; }
    mkdir -p "$STASH"
    for p in "${PATHS[@]}"; do
      mkdir -p "$STASH/$(dirname "$p")" && mv "$p" "$STASH/$p"
    done
    git rm -r -q --cached "${PATHS[@]}"
    tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
    carry=$(du -cb .carry 2>/dev/null | tail -1 | cut -f1)
    echo "travels: tree $((tree / 1048576)) MiB + .carry $((carry / 1048576)) MiB (limit 64 MiB)"
    ;;
  restore)
    [ -d "$STASH" ] || { echo "nothing stashed at $STASH" >&2; exit 1; }
    for p in "${PATHS[@]}"; do
      mv "$STASH/$p" "$p"
    done
    git reset -q
    rm -rf "$STASH"
    git status --short
    ;;
  *) echo "usage: bash train/travel.sh stash|restore" >&2; exit 2 ;;
esac
