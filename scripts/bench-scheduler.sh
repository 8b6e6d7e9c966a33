#!/usr/bin/env bash
# The scheduler's throughput before and after the issue-10 changes, with the zero-cost null model:
# `phonestream bench --streams` at a base commit (default 0b051bb: bench --streams added, scheduler,
# streaming and decoders as they were) and at the working tree, for the same settings.
# Usage: scripts/bench-scheduler.sh [BASE_COMMIT] -- BENCH_OPTIONS...
#   e.g. scripts/bench-scheduler.sh 0b051bb -- --streams 100,500,1000 --decoder greedy --chunk-ms 640
# Prints two tables (base, then now; both with today's null model). Run it on an otherwise idle
# machine: the figures are wall-clock.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
base=0b051bb
if [ "${1:-}" != "--" ] && [ -n "${1:-}" ]; then base=$1; shift; fi
[ "${1:-}" = "--" ] && shift
python=${PYTHON:-$repo/.venv/bin/python}
old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
git -C "$repo" archive "$base" phonestream | tar -x -C "$old"
# the stand-in model is the measuring instrument, not the code under test: both runs use today's
cp "$repo/phonestream/models/null.py" "$old/phonestream/models/null.py"
echo "== base $base" >&2
(cd "$old" && PYTHONPATH="$old" "$python" -m phonestream bench --model null "$@")
echo "== now $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet -- phonestream || echo +changes)" >&2
(cd "$repo" && "$python" -m phonestream bench --model null "$@")
