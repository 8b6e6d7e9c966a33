#!/usr/bin/env bash
# Issue 10's GPU check, prepared for a session that is lent a GPU (15 minutes of device time in all, one
# command, 64 MiB carried; /work/.library/device/README.md). It measures, on the device:
#   1. precision agreement (scripts/precision-agreement.py): float32 against bfloat16 / float16 / auto for a
#      random wav2vec2-large and for the default model's shape, on the shipped recordings; then
#      `phonestream bench` (one stream, RTF and chunk compute) of the wav2vec2-large at auto and float32;
#   2. `phonestream serve --device cuda --decoder greedy --max-batch 1024 --max-wait-ms 30` under
#      `phonestream loadtest` at 64, 256, 512, 1024 real-time streams, each round split over --procs client
#      processes run at once (their rows merged: worst process's p95, summed drops and errors), for
#      a random wav2vec2-large (640/480/160 ms windows) at --dtype auto, the default model's shape (its own
#      windows), then the wav2vec2-large at float32 at two stream counts for the before/after;
# and writes the tables to $OUT (the tool's result folder; ./gpu-check-out when unset).
#
#   here, first:   scripts/gpu-check.sh fetch          # wheels the device image lacks -> .whl/ (git-ignored)
#   on the device: run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=570)
#   CPU rehearsal: scripts/gpu-check.sh --device cpu --size tiny --streams 2 --float32-streams 1 --procs 1 \
#                      --seconds 5
#
# The random models come from scripts/random_models.py (compute does not depend on the weights); the
# shipped encoder's 75 MB cannot travel, so the default model runs with a random encoder of its shape.
set -uo pipefail

DEVICE=cuda SIZE=large STREAMS=64,256,512,1024 FLOAT32_STREAMS=256,512 PROCS=8 SECONDS_=15 FEED_MS=20 PORT=8791
BUDGET_S=480  # stop starting new phases after this many seconds (the device call's limit is 600)
while [ $# -gt 0 ]; do
    case "$1" in
        fetch) MODE=fetch ;;
        --device) DEVICE=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --streams) STREAMS=$2; shift ;;
        --float32-streams) FLOAT32_STREAMS=$2; shift ;;
        --procs) PROCS=$2; shift ;;
        --seconds) SECONDS_=$2; shift ;;
        --feed-ms) FEED_MS=$2; shift ;;
        --port) PORT=$2; shift ;;
        --budget-s) BUDGET_S=$2; shift ;;
        *) echo "gpu-check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

if [ "${MODE:-}" = fetch ]; then
    # cp312 wheels of what phonestream needs beyond the device image's packages (KINDS.md lists them)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
    rm -rf .whl && mkdir .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
        ctranslate2==4.8.5 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0 rapidfuzz==3.14.6 \
        starlette==1.10.0 uvicorn==0.54.0 websockets==17.4 python-multipart==0.0.34 pydantic==2.14.4 \
        pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 || exit 1
    du -sh .whl
    exit 0
fi

OUT=${OUT:-$REPO/gpu-check-out}
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
mkdir -p "$OUT"
PY=python3
[ -x "$REPO/.venv/bin/python" ] && PY=$REPO/.venv/bin/python
if [ -d .whl ] && ! $PY -c "import ctranslate2, soundfile, soxr, starlette, uvicorn, websockets, pydantic" 2>/dev/null
then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
over_budget() { [ "$(elapsed)" -ge "$BUDGET_S" ] && echo "skipped (budget of $BUDGET_S s spent): $1" | tee -a "$OUT/env.txt"; }

{
    echo "# gpu-check $(date -u +%FT%TZ) device=$DEVICE size=$SIZE streams=$STREAMS procs=$PROCS seconds=$SECONDS_"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    nproc
    $PY - <<'EOF'
import sys, torch, transformers
print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.is_available() and torch.cuda.get_device_name(0),
      "bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
try:
    import ctranslate2
    print("ctranslate2", ctranslate2.__version__, "cuda devices", ctranslate2.get_cuda_device_count())
    if ctranslate2.get_cuda_device_count():
        print("ctranslate2 cuda compute types", sorted(ctranslate2.get_supported_compute_types("cuda")))
except Exception as err:  # noqa: BLE001
    print("ctranslate2: not usable:", err)
EOF
    ldconfig -p 2>/dev/null | grep -o 'libcublas\(Lt\)\?\.so\.[0-9]*' | sort -u | tr '\n' ' '; echo
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== building the random models ($(elapsed) s)"
W2V=$WORK/wav2vec2-$SIZE DEF=$WORK/default-shaped
timeout 240 $PY scripts/random_models.py wav2vec2 "$SIZE" "$W2V" > /dev/null 2>> "$WORK/build.log" || {
    echo "building wav2vec2-$SIZE failed"; tail -5 "$WORK/build.log"; exit 1; }
timeout 240 $PY scripts/random_models.py default "$DEF" > /dev/null 2>> "$WORK/build.log" \
    || echo "building the default-shaped model failed: $(tail -1 "$WORK/build.log")" | tee -a "$OUT/env.txt"

echo "== precision agreement ($(elapsed) s)"
MODELS=(--model "$W2V")
[ -f "$DEF/phonestream.json" ] && MODELS+=(--model "$DEF")
timeout 180 $PY scripts/precision-agreement.py "${MODELS[@]}" --device "$DEVICE" --decoder greedy \
    > "$OUT/precision.txt" 2>&1 || echo "precision agreement failed or timed out" >> "$OUT/precision.txt"
cat "$OUT/precision.txt"

echo "== single-stream bench ($(elapsed) s)"
for dtype in auto float32; do
    echo "--- bench --dtype $dtype" >> "$OUT/bench.txt"
    timeout 120 $PY -m phonestream bench -m "$W2V" --device "$DEVICE" --dtype "$dtype" --config 640/480/160 \
        --decoder greedy --seconds 20 >> "$OUT/bench.txt" 2>&1 || echo "bench --dtype $dtype failed" >> "$OUT/bench.txt"
done
cat "$OUT/bench.txt"

# serve TAG MODEL_ARGS...: start a server in the background, wait for /health
serve() {
    local tag=$1; shift
    $PY -m phonestream serve "$@" --device "$DEVICE" --decoder greedy --max-batch 1024 --max-wait-ms 30 \
        --max-streams 4096 --max-connections 8192 --port "$PORT" --log-level warning > "$WORK/server-$tag.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 240); do
        $PY -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" \
            2>/dev/null && return 0
        kill -0 "$SERVER" 2>/dev/null || break
        sleep 0.5
    done
    echo "server $tag did not start:"; tail -5 "$WORK/server-$tag.log"
    kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null
    return 1
}

stop_server() { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; }

# loadtest TAG N: N streams split over PROCS client processes at once; appends the merged row
loadtest() {
    local tag=$1 n=$2 procs=$PROCS i pids=()
    [ "$n" -lt "$procs" ] && procs=$n
    for i in $(seq 0 $((procs - 1))); do
        local share=$(( n / procs + (i < n % procs ? 1 : 0) ))
        timeout $((SECONDS_ * 2 + 60)) $PY -m phonestream loadtest --url "ws://127.0.0.1:$PORT/ws" --streams "$share" \
            --seconds "$SECONDS_" --feed-ms "$FEED_MS" --json > "$WORK/lt-$tag-$n-$i.json" 2> "$WORK/lt-$tag-$n-$i.err" &
        pids+=($!)
    done
    wait "${pids[@]}"
    $PY - "$tag" "$n" "$procs" "$WORK" >> "$OUT/loadtest.jsonl" <<'EOF'
import glob, json, sys
tag, n, procs, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows, failed = [], []
for i in range(procs):
    try:
        rows += json.load(open(f"{work}/lt-{tag}-{n}-{i}.json"))
    except (OSError, ValueError):
        failed.append(open(f"{work}/lt-{tag}-{n}-{i}.err").read().strip().splitlines()[-1:])
worst = lambda key, q: max((r[key][q] for r in rows if r[key][q] is not None), default=None)  # noqa: E731
print(json.dumps({"model": tag, "streams": n, "client_procs": procs, "failed_procs": len(failed),
                  "keeps_up": bool(rows) and not failed and all(r["keeps_up"] for r in rows),
                  "emission_delay_p95_s": worst("emission_delay_s", "p95"), "lag_p95_s": worst("lag_s", "p95"),
                  "lag_max_s": worst("lag_s", "max"), "final_p95_s": worst("final_s", "p95"),
                  "dropped_s": round(sum(r["dropped_s"] for r in rows), 3), "errors": sum(r["errors"] for r in rows),
                  "windows_per_batch": rows[0]["avg_batch"] if rows else None,
                  "model_busy": rows[0]["model_busy"] if rows else None,
                  "first_error": next((r["error_sample"] for r in rows if r["error_sample"]),
                                      failed[0] if failed else None)}))
EOF
    tail -1 "$OUT/loadtest.jsonl"
    table
}

# table: $OUT/loadtest.md from the rows so far (rewritten after each, so a run cut short still reports)
table() {
    $PY - "$OUT/loadtest.jsonl" > "$OUT/loadtest.md" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])] if __import__("os").path.exists(sys.argv[1]) else []
print("| model | live streams | keeps up | emission delay p95 | lag p95 | lag max | windows per batch | model busy share "
      "| dropped s | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['model']} | {r['streams']} | {'yes' if r['keeps_up'] else 'no'} | {r['emission_delay_p95_s']} s | "
          f"{r['lag_p95_s']} s | {r['lag_max_s']} s | {r['windows_per_batch']} | {r['model_busy']} | {r['dropped_s']} "
          f"| {r['errors']} |")
EOF
}

# round TAG STREAMS SERVE_ARGS...: one server, one loadtest per stream count
round() {
    local tag=$1 counts=$2; shift 2
    over_budget "$tag" && return
    echo "== serving $tag ($(elapsed) s)"
    local t0=$(date +%s)
    serve "$tag" "$@" || return
    echo "--- $tag: server answered /health $(( $(date +%s) - t0 )) s after start (load + warm-up)" \
        >> "$OUT/server-logs.txt"
    for n in ${counts//,/ }; do
        over_budget "$tag at $n streams" && break
        loadtest "$tag" "$n"
    done
    stop_server
    { echo "--- server log $tag (last lines)"; tail -20 "$WORK/server-$tag.log"; } >> "$OUT/server-logs.txt"
}

W2V_WINDOW=(--chunk-ms 640 --left-ms 480 --right-ms 160)
round "wav2vec2-$SIZE-auto" "$STREAMS" -m "$W2V" "${W2V_WINDOW[@]}"
[ -f "$DEF/phonestream.json" ] && round "default-shaped-auto" "$STREAMS" -m "$DEF"
[ -n "$FLOAT32_STREAMS" ] && round "wav2vec2-$SIZE-float32" "$FLOAT32_STREAMS" -m "$W2V" "${W2V_WINDOW[@]}" --dtype float32

cat "$OUT/loadtest.md"
echo "== done in $(elapsed) s; results in $OUT"
rm -rf "$WORK"
