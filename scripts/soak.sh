#!/usr/bin/env bash
# The issue-9 soak: a fresh server and N real-time streams, both pinned to one CPU core so that
# other work on the machine (pinned elsewhere) does not distort the figures.
#   scripts/soak.sh MINUTES BAD_PER_S OUTDIR [STREAMS] [CORE] [PORT]
# BAD_PER_S 0 is the idle comparison run. Writes OUTDIR/loadtest.txt (the table), progress.log, server.log, tracebacks.txt.
set -euo pipefail
minutes=$1; bad=$2; out=$3; streams=${4:-8}; core=${5:-0}; port=${6:-8799}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
mkdir -p "$out"
taskset -c "$core" "$py" -m phonestream serve --port "$port" >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 1
done
taskset -c "$core" "$py" -m phonestream loadtest --url "ws://127.0.0.1:$port/ws" --soak "$minutes" \
  --streams "$streams" --seconds 60 --bad-per-s "$bad" >"$out/loadtest.txt" 2>"$out/progress.log"
grep -c -i traceback "$out/server.log" >"$out/tracebacks.txt" || true
