#!/usr/bin/env bash
# Times the README's two Quick start commands as a newcomer runs them: a fresh clone, a new venv each, nothing
# preinstalled but Python 3.11 (pip's wheel cache and torch on this machine's disk as they are).
#   bash benchmarks/quickstart.sh [OUT_MD]      (default reports/quickstart.md)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/reports/quickstart.md}
WORK=$(mktemp -d)
mapfile -t CMDS < <(python3 - "$ROOT/README.md" <<'PY'
import re, sys
text = open(sys.argv[1]).read().split("## Quick start", 1)[1]
print("\n".join(l for l in re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines() if l.strip()))
PY
)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)  # what the clones below hold: the committed tree, not the working one
git clone -q "$ROOT" "$WORK/app" && git clone -q "$ROOT" "$WORK/tests"
ln -s "$ROOT/../shared" "$WORK/shared"  # the shared data sits beside a checkout, as in CI
PORT=7931
start=$(date +%s.%N)
(cd "$WORK/app" && GRADIO_SERVER_PORT=$PORT setsid bash -c "${CMDS[0]}" > "$WORK/app.log" 2>&1 &)
until curl -sf "http://127.0.0.1:$PORT/" >/dev/null; do
  sleep 1
  if (( $(date +%s) - ${start%.*} > 900 )); then echo "app did not start" >&2; break; fi
done
app_s=$(echo "$(date +%s.%N) - $start" | bc)
for pid in $(ss -ltnp "sport = :$PORT" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do kill "$pid" || true; done
start=$(date +%s.%N)
set +e
(cd "$WORK/tests" && bash -c "${CMDS[1]}") > "$WORK/tests.log" 2>&1
rc=$?
set -e
test_s=$(echo "$(date +%s.%N) - $start" | bc)
summary=$(grep -E "passed|failed" "$WORK/tests.log" | tail -1)
cat > "$OUT" <<MD
# Quick start timings

Measured by \`bash benchmarks/quickstart.sh\` on $(date -u +%Y-%m-%d) at commit $COMMIT
($(nproc) cores, $(python3 --version)); fresh clones and fresh venvs, pip's wheel cache as it was on the machine, the
HAM10000 copy beside the clone (\`../shared/data/ham10000\`, as in CI; without it the tests that need it skip).

| command | seconds | result |
|---|---|---|
| 1: install + start the app (until http://127.0.0.1:$PORT answers) | $(printf %.0f "$app_s") | serving |
| 2: install + run the tests | $(printf %.0f "$test_s") | exit $rc: $summary |
MD
if [ "$rc" != 0 ]; then  # which tests failed, and the whole log kept for a look
  { echo; echo "Failed:"; echo; grep -E "^FAILED" "$WORK/tests.log" | sed 's/^/- /'; } >> "$OUT"
  cp "$WORK/tests.log" "${OUT%.md}.tests.log"
fi
cat "$OUT"
rm -rf "$WORK"
