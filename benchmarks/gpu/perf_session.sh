#!/usr/bin/env bash
# Issue 7 performance session on the lent machine: take `nvidia-h200-x2` for the whole session (1-GPU jobs pin
# CUDA_VISIBLE_DEVICES, so a 1-GPU and a 2-GPU stage need no second install). Install first, as docs/gpu-runs.md
# says (stage-wheels carry, then install-on-device, then `. /tmp/gpuenv.sh`), then one command per stage:
#
#   bash benchmarks/gpu/perf_session.sh prep    # plugin, 7B random checkpoint, 64 x 10 s synthetic rows (~3 min)
#   bash benchmarks/gpu/perf_session.sh a       # GPU0: GRPO 1-GPU baseline | GPU1: rollout bench, all modes (~9 min)
#   bash benchmarks/gpu/perf_session.sh b       # GPU0: GRPO 1-GPU "wins" (bypass+micro+refbf16+kvmem)    (~8 min)
#   bash benchmarks/gpu/perf_session.sh c       # both GPUs: GRPO 2-GPU "wins" (C_VARIANTS=baseline for the other) (~9 min)
#   bash benchmarks/gpu/perf_session.sh one VARIANT NGPU   # any single variant (benchmarks/grpo_step_bench.py list)
#
# Every stage reinstalls the plugin from this checkout (files in /tmp survive only while the machine is held) and
# writes logs + JSON to $OUT. Each command must end inside the 10-minute per-command limit: GRPO runs are capped
# at 3 steps (step 1 = warm-up) and a 560 s timeout, the rollout bench times 2 of R1-AQA's 16 calls and
# extrapolates (labelled).
set -uo pipefail
STAGE=${1:?stage}
. "$(dirname "$0")/session_env.sh"
STEPS=${STEPS:-3}
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv | tee "$LOGS/gpus-$STAGE.csv"
date -u +"%Y-%m-%d %H:%M UTC" | tee "$LOGS/date-$STAGE.txt"
python3 "$REPO/benchmarks/floor.py" --json "$LOGS/floor.json" > "$LOGS/floor.txt"

grpo() {  # grpo NGPU GPU_LIST VARIANTS
  CUDA_VISIBLE_DEVICES=$2 python3 "$REPO/benchmarks/grpo_step_bench.py" run --model "$W/7b" --data "$W/syn10.parquet" \
    --gpus "$1" --steps "$STEPS" --variants "$3" --logs "$LOGS" --cwd "$W" --timeout "${GRPO_TIMEOUT:-560}" \
    --json "$LOGS/grpo-${3//,/+}-$1gpu.json"
}
rollout() {  # rollout GPU
  CUDA_VISIBLE_DEVICES=$1 python3 "$REPO/benchmarks/rollout_bench.py" --size 7b --batch 16 --n 8 --tokens 256 \
    --clip-seconds 10 --hf-prompts "${HF_PROMPTS:-2}" --workdir "$W" --timeout 400 --json "$LOGS/rollout.json" \
    ${ROLLOUT_ARGS:-}
}

case $STAGE in
prep)
  [ -f "$W/7b/config.json" ] || /usr/bin/time -f "make-model 7b: %e s, max RSS %M KB" $R1AQA make-model --size 7b --out "$W/7b"
  [ -f "$W/syn10.parquet" ] || $R1AQA data build synthetic-aqa --tasks sound --size 64 --clip-seconds 10 --seed 3 \
    --no-progress --out "$W/syn10.parquet"
  ls -la "$W" "$W/7b"; cat "$LOGS/floor.txt"
  ;;
a)
  rollout 1 > "$LOGS/rollout.txt" 2>&1 &
  rpid=$!
  grpo 1 0 baseline 2>&1 | tee "$LOGS/stage-a-grpo.txt"
  wait $rpid; echo "rollout bench exit $?"
  cat "$LOGS/rollout.txt" | tail -n 30
  ;;
b)
  grpo 1 0 wins 2>&1 | tee "$LOGS/stage-b-grpo.txt"
  ;;
c)
  grpo 2 0,1 "${C_VARIANTS:-wins}" 2>&1 | tee "$LOGS/stage-c-grpo.txt"
  ;;
one)
  V=${2:?variant}; N=${3:-1}
  grpo "$N" "$([ "$N" = 2 ] && echo 0,1 || echo 0)" "$V" 2>&1 | tee "$LOGS/stage-one-$V-${N}gpu.txt"
  ;;
*) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
# one table over every GRPO log so far in $LOGS (the lead copies it into docs/benchmarks.md)
ls "$LOGS"/grpo-*gpu.log > /dev/null 2>&1 && python3 "$REPO/benchmarks/grpo_step_bench.py" table "$LOGS"/grpo-*gpu.log
