#!/usr/bin/env bash
# Real-vLLM sessions on the GPU machine, from the repo root, after the offline vLLM bundle of
# shared/tools/vllm/ is installed in /tmp/site (`bash .vllm/install.sh`). Results go to $OUT.
#
#   bash bench/real_engine/vllm_session.sh small   recording of a 0.8 B model (vLLM's own CPU work
#                                                  dominates), with a restart: $OUT/vllm-small.tar.gz
#   bash bench/real_engine/vllm_session.sh hf      real transformers code in labelled phases (no vLLM
#                                                  needed): $OUT/hf-transformers.tar.gz
#   bash bench/real_engine/vllm_session.sh qwen-graphs   a ~1.3 B Qwen2 (another architecture) with
#                                                  CUDA graphs, one API server: steady 48 streams,
#                                                  the same 48 with a neighbour, 128 streaming clients,
#                                                  a flood of 1-token requests: $OUT/vllm-qwen-graphs.tar.gz
#   bash bench/real_engine/vllm_session.sh qwen-api4     the same model with --api-server-count 4
#                                                  --stream-interval 10: the flood and the streaming
#                                                  load again (the "after" of the remedy pairs)
#   bash bench/real_engine/vllm_session.sh qwen-eager    the same model with --enforce-eager: one
#                                                  stream, then 48 streams (load change, same culprit)
#   bash bench/real_engine/vllm_session.sh live    the agent (this checkout's wheel in .whl/agent) watching
#                                                  a Llama 2.7 B live, recorded at the same time:
#                                                  $OUT/agent-api.jsonl beside $OUT/vllm-llama-live.tar.gz
#   bash bench/real_engine/vllm_session.sh large   the agent itself watching a ~7 B model from before
#                                                  vLLM starts, recorded at the same time, then the
#                                                  agent's overhead on vLLM's tokens/s (bench/vllm_overhead.py)
#
# Needs: .vllm/mkmodel.py (copy of bench/real_engine/mkmodel.py, which adds --arch to shared/tools/vllm/mkmodel.py), .whl/pyspy/*.whl; for `large`
# also .whl/agent/*.whl (duckdb, orjson, apscheduler, tzlocal and the infersight wheel).
set -u
MODE=$1
: "${OUT:=/tmp/out}"
mkdir -p "$OUT"
PORT=8011
if [ ! -x /tmp/pyspy/bin/py-spy ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/pyspy .whl/pyspy/*.whl || exit 1
fi
PYSPY=/tmp/pyspy/bin/py-spy
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

serve_cmd() {  # MODEL_DIR -> the bash command that execs vllm serve
  echo "source /tmp/site/vllm-env.sh && exec vllm serve $1 --load-format dummy --port $PORT --max-model-len 8192 --gpu-memory-utilization 0.80 --enable-mfu-metrics"
}

record_qwen() {  # NAME "EXTRA vllm FLAGS" PHASES LIMIT_S
  [ -f /tmp/m-qwen/config.json ] || python3 .vllm/mkmodel.py /tmp/m-qwen --arch qwen2 --hidden-size 1536 \
    --intermediate-size 8960 --layers 28 --heads 12 --kv-heads 2 > /dev/null || exit 1
  timeout -s INT "$4" python3 bench/real_engine/record.py --out "/tmp/rec/$1" --model /tmp/m-qwen --port $PORT \
    --serve "$(serve_cmd /tmp/m-qwen) $2" --pyspy $PYSPY --phases "$3"
  cp "/tmp/rec/$1/engine.log" "$OUT/$1-engine.log"
  rm -f "/tmp/rec/$1/engine.log"
  tar -C /tmp/rec -czf "$OUT/$1.tar.gz" "$1"
}

case "$MODE" in
live)
  # the agent (this checkout's wheel, default config) watching a Llama 2.7 B it has never seen,
  # recorded at the same time: the agent's live answers beside a replay of the same seconds
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/agent .whl/agent/*.whl || exit 1
  python3 .vllm/mkmodel.py /tmp/m-live --hidden-size 3072 --intermediate-size 8192 --layers 26 --heads 24 \
    --kv-heads 8 > /dev/null || exit 1
  printf '[storage]\npath = "/tmp/agent.duckdb"\n[collectors.stacks]\npyspy_path = "%s"\n' "$PYSPY" > /tmp/agent.toml
  PYTHONPATH=/tmp/agent setsid python3 -m infersight.daemon.cli run --config /tmp/agent.toml > "$OUT/agent.log" 2>&1 &
  AGENT=$!
  sleep 5
  T0=$(date +%s)
  # the serve command travels in the environment: in the recorder's own command line discovery
  # would take the recorder for a vLLM API server (and the neighbour it starts for its child)
  SERVE_CMD="$(serve_cmd /tmp/m-live)" timeout -s INT "${LIMIT_S:-420}" python3 bench/real_engine/record.py \
    --out /tmp/rec/vllm-llama-live --model /tmp/m-live --port $PORT --serve @SERVE_CMD --pyspy $PYSPY \
    --phases start,idle:8,heavy_decode:25,neighbor:25,flood:25,prefill:20,stream128:25,idle:8
  sleep 25   # the agent's analysis runs lag_s behind: let it reach the end
  for q in "events?from=$T0&limit=500" "health" "processes?all=1" "windows?from=$T0"; do
    python3 -c "import sys,urllib.request as u; print(u.urlopen('http://127.0.0.1:8321/api/'+sys.argv[1], timeout=60).read().decode())" "$q"
  done > "$OUT/agent-api.jsonl" 2>&1
  kill -TERM $AGENT; sleep 5
  grep -c -i "skipped\|maximum number of running" "$OUT/agent.log"
  cp /tmp/rec/vllm-llama-live/engine.log "$OUT/vllm-llama-live-engine.log"
  rm -f /tmp/rec/vllm-llama-live/engine.log
  gzip -f /tmp/rec/vllm-llama-live/gpu.jsonl
  tar -C /tmp/rec -czf "$OUT/vllm-llama-live.tar.gz" vllm-llama-live
  ;;
qwen-graphs)
  record_qwen vllm-qwen-graphs "" start,idle:6,steady48:20,neighbor48:20,stream128:20,flood:20,idle:5 "${LIMIT_S:-330}"
  ;;
qwen-api4)
  record_qwen vllm-qwen-api4 "--api-server-count 4 --stream-interval 10" start,idle:5,flood:20,stream128:20,idle:5 "${LIMIT_S:-260}"
  ;;
qwen-eager)
  record_qwen vllm-qwen-eager "--enforce-eager" start,idle:5,single_stream:16,steady48:18,idle:5 "${LIMIT_S:-200}"
  ;;
small)
  python3 .vllm/mkmodel.py /tmp/m-small > /dev/null || exit 1
  timeout -s INT 480 python3 bench/real_engine/record.py --out /tmp/rec/vllm-small --model /tmp/m-small --port $PORT \
    --serve "$(serve_cmd /tmp/m-small)" --pyspy $PYSPY \
    --phases start,idle:10,prefill:18,heavy_decode:20,single_stream:18,logprobs:18,structured:16,neighbor:18,idle:8,restart,heavy_decode:12
  cp /tmp/rec/vllm-small/engine.log "$OUT/vllm-small-engine.log"
  rm -f /tmp/rec/vllm-small/engine.log
  tar -C /tmp/rec -czf "$OUT/vllm-small.tar.gz" vllm-small
  ;;
large)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/agent .whl/agent/*.whl || exit 1
  python3 .vllm/mkmodel.py /tmp/m-large --hidden-size 4096 --intermediate-size 14336 --layers 32 --heads 32 --kv-heads 8 > /dev/null || exit 1
  cat > /tmp/agent.toml <<EOF
[storage]
path = "/tmp/agent.duckdb"
[collectors.stacks]
pyspy_path = "$PYSPY"
EOF
  # the agent as a new user runs it: default patterns, metrics endpoint auto-discovered
  PYTHONPATH=/tmp/agent setsid python3 -m infersight.daemon.cli run --config /tmp/agent.toml > "$OUT/agent.log" 2>&1 &
  AGENT=$!
  sleep 5
  T0=$(date +%s)
  timeout -s INT 540 python3 bench/real_engine/record.py --out /tmp/rec/vllm-large --model /tmp/m-large --port $PORT \
    --serve "$(serve_cmd /tmp/m-large)" --pyspy $PYSPY \
    --phases start,idle:8,single_stream:18,neighbor:18,heavy_decode:18,prefill:18,logprobs:18,structured:15,idle:8 \
    --after "python3 bench/vllm_overhead.py --base-url \$BASE_URL --model \$MODEL --agent-pid $AGENT --pairs 8 --window-s 8 --json $OUT/overhead.json"
  sleep 20   # the agent's analysis runs lag_s behind: let it reach the end
  for q in "windows?from=$T0" "events?from=$T0&limit=500" "health" "processes?all=1" "engines"; do
    python3 -c "import sys,urllib.request as u; print(u.urlopen('http://127.0.0.1:8321/api/'+sys.argv[1], timeout=30).read().decode())" "$q"
  done > "$OUT/agent-api.jsonl" 2>&1
  kill -TERM $AGENT; sleep 6
  gzip -c /tmp/agent.duckdb > "$OUT/agent.duckdb.gz"
  cp /tmp/rec/vllm-large/engine.log "$OUT/vllm-large-engine.log"
  rm -f /tmp/rec/vllm-large/engine.log
  tar -C /tmp/rec -czf "$OUT/vllm-large.tar.gz" vllm-large
  ;;
hf)
  # real HuggingFace transformers code, no server: the workload labels its own phases
  python3 .vllm/mkmodel.py /tmp/m-tok > /dev/null || exit 1
  timeout -s INT 300 python3 bench/real_engine/record.py --out /tmp/rec/hf-transformers --pyspy $PYSPY \
    --workload "exec python3 bench/real_engine/hf_workload.py /tmp/m-tok \$LABELS --seconds 15"
  cp /tmp/rec/hf-transformers/engine.log "$OUT/hf-engine.log"
  rm -f /tmp/rec/hf-transformers/engine.log
  tar -C /tmp/rec -czf "$OUT/hf-transformers.tar.gz" hf-transformers
  ;;
*) echo "usage: $0 small|large|hf|live|qwen-graphs|qwen-api4|qwen-eager" >&2; exit 2 ;;
esac
ls -la "$OUT"
