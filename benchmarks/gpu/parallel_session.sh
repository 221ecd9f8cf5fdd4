#!/usr/bin/env bash
# A whole GPU session on one lent 4-GPU host (`nvidia-h200-x4`): one queue of jobs per GPU group, all running
# detached, so no job is cut by the 10-minute limit of a command and no GPU idles. Device time is counted per held
# machine, so four queues side by side cost what one costs. After the install (docs/gpu-runs.md):
#
#   bash benchmarks/gpu/parallel_session.sh start [MINUTES]   # launch the queues (setsid) and return; jobs get
#                                                             #   MINUTES (default 24) from now, then are stopped
#   bash benchmarks/gpu/parallel_session.sh wait [SECONDS]    # wait (default 540 s) or until every queue is done;
#                                                             #   print progress, pack all logs into $OUT/0-logs.tgz
#   bash benchmarks/gpu/parallel_session.sh stop              # stop every job now, pack the logs
#
# The queues (QUEUE_<name> functions below). QUEUES=gpu23,one,bench by default (the 4-GPU host: GPU2+3, GPU0,
# GPU1); QUEUES=x8 on `nvidia-h200-x8`; QUEUES=lp1 for the learning proof on one H200:
#   lp1:   the learning proof's two arms side by side on ONE GPU: warm-up once, then GRPO on the music tasks and
#          GRPO on all tasks (the recipe as shipped) and the eval before, all three sharing GPU 0 (each vLLM with a
#          fixed KV cache, so no start-up memory profile trips over the others), then each arm's eval after
#   lps:   the learning proof on one GPU: warm-up (format, then listening), the verl arm on all tasks, the eval
#          before and a sweep of GRPO rehearsals (plain torch, settings in REH_SWEEP), all side by side
#   lp2:   the learning proof on one GPU: warm-up (format, then listening), then the verl arms LP_ARMS (default: the
#          recipe on beep count + instrument) and the eval before side by side
#   lp2b:  an independent replicate of lp2 (SEED_B, default 1) on GPU $LP_GPU_B (default 1): QUEUES=lp2,lp2b on
#          `nvidia-h200-x2`
#   gpu0:  learning proof GRPO trained on the music tasks (the recipe's settings; validated on every task): prep
#          (model, data, warm-up, eval before) -> GRPO -> eval after, plots
#   gpu1:  learning proof GRPO on all tasks, same settings and phases
#   probe: learning proof, supervised on the correct answers (examples/learning_proof/run.sh probe)
#   gpu23: 7B GRPO 2 GPUs: baseline -> "prof" (winsfast with step 2 under the torch profiler) -> "fsdp2fast"
#          (winsfast on FSDP2) -> "winsfast" again; a 3-step 7B run takes 6-9 min, so a session gets the first three
#          (the 7B folder is built once, on a GPU, by whichever queue needs it first)
#   hooks: tests/test_gpu_hooks.py, fsdp_unit_overhead.py, optimizer_stream_bench.py (GPU $HOOKS_GPU, default 1)
#   one:   queue hooks's jobs (unless QUEUES names hooks too), then 7B GRPO 1 GPU: "prof1liger" (4 steps of
#          "wins1liger": wins1big with Liger's kernels, hook X; steps 2-3 measured, step 4 under the torch profiler)
#          -> "wins1scatter" (wins1liger with hook Y off: the control) -> "wins1keep8" and "wins1enc" (hook Z:
#          fewer layers recomputed) -> "wins1big" (wins1vref with update micro-batches of 16, no Liger) ->
#          "wins1fast" (wins1vref without gradient checkpointing, update micro-batches of 4) -> "prof1" (4 steps of
#          "wins1vref", hook V: AdamW's state in host memory, streamed through the step; hook R: the reference on
#          the GPU; step 4 profiled) -> "wins1v" (the reference offloaded) -> "wins1acc" (wins + the optimizer step
#          on the CPU + one gradient reduction a step, stack samples on) -> "wins1" (a reduction a micro-batch)
#          (GPU $ONE_GPU, default 0); 120-170 GB of host memory: alone on nvidia-h200-x2
#   lora:  7B GRPO 1 GPU, the LoRA recipe (optimizer on the GPU): "lora1fsdp2" (FSDP2, hook T's out-of-place merge
#          for the sync) -> "lora1" (the same on FSDP1) -> "lora1verl" (verl's in-place merge) (GPU $LORA_GPU,
#          default 1); not beside queue one on a host under 400 GiB (nvidia-h200-x2: the host ran out)
#   lorab: "lora1" on GPU $LORA_B_GPU (default 0) beside queue lora's "lora1fsdp2" (QUEUES=lora,lorab), which then
#          skips its own
#   perf1: 7B GRPO 1 GPU "wins1" -> rollout bench -> "wins1ref" (GPU $ONE_GPU, default 1). The twelfth session ran
#          it beside lp2 (QUEUES=lp2,perf1), with the cores unsplit: the 7B's CPU offload starved the warm-up ~10x
#   kv:    rollout bench: bare vLLM, then the same engine with an fp8 KV cache (GPU $BENCH_GPU, default 0)
#   merge: hook Y's GPU test, then audio_merge_bench.py on the 7B (GPU $BENCH_GPU, default 0)
#   causal: hook AA's GPU test, its bench with sdpa's cuDNN kernels off and on, then "wins1smallmask" (GPU 0)
#   shared: hook AB's GPU test, 7B GRPO 1 GPU "wins1smallshared32" (update micro-batches of 32, 4 steps),
#          "wins1smallshared" (16) and "wins1smallnoshared" (AB off) for 3 steps, then its bench (GPU 0)
#   small: 7B GRPO 1 GPU on nvidia-h200's 128 GiB host, 2 + 2 workers: "wins1smallkeep8" (the 1-GPU line) and
#          "wins1smallkeep8mask" (hook AA off) for 4 steps each, then "wins1smallkeep12" (12 decoder layers kept)
#   bench: rollout bench (plugin vs bare vLLM vs HF generate) -> encoder dedup bench -> feature-transfer bench
#          (GPU $BENCH_GPU, default 1)
#   contrast: same vs another sample's audio for the actor (tests/test_gpu_grpo.py; GPU2 | GPU3; issue 3, met)
#
# What the 2026-11-28 sessions taught (docs/gpu-runs.md): a verl run needs 4-6 min before step 1 there; vLLM's
# start-up memory profile fails when another process on its GPU frees memory, so either one vLLM process per GPU
# or each with a fixed KV cache (lp1: two GRPO runs and an evaluation shared one H200 that way); nothing
# CPU-heavy beside the runs (make-model 7b on the CPU took 6 min and slowed every start-up); only 8 files come
# back from $OUT; idle time on a held machine counts, so give it back as soon as `wait` says all is done.
# Processes started in their own session (setsid) outlive the command that started them (device README).
set -uo pipefail
CMD=${1:?start, wait or stop}
HERE=$(cd "$(dirname "$0")" && pwd)
S=${SESSION_DIR:-/tmp/r1aqa-session}

pack() {  # everything under $S but data and profiler traces (their summaries stay) into one archive in $OUT, plus
          # the job list and the 7B table beside it; stack samples (STACKS=1) as a table in the archive and raw in
          # 1-stacks.tgz (one file back may hold 16 MiB)
  local out=${OUT:-$PWD/gpu-logs} d; mkdir -p "$out"
  for d in "$S"/*/stacks; do
    [ -d "$d" ] && python3 "$HERE/../stack_report.py" "$d" --groups 12 > "$d/../stacks.md" 2>&1
  done
  tar -czf "$out/0-logs.tgz" -C "$S" --exclude "*.parquet" --exclude "stacks-*.json" --exclude "traces-*" . 2>/dev/null
  ls "$S"/*/stacks/stacks-*.json > /dev/null 2>&1 && tar -czf "$out/1-stacks.tgz" -C "$S" \
    $(cd "$S" && ls -d */stacks) 2>/dev/null
  cp "$S/jobs.tsv" "$out/jobs.tsv" 2>/dev/null
  ls "$S"/grpo-*gpu.log > /dev/null 2>&1 && PYTHONPATH="$(cd "$HERE/../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}" \
    python3 "$HERE/../grpo_step_bench.py" table "$S"/grpo-*gpu.log | tee "$out/grpo-table.md"
}

mix_refused() {  # the 7B run with the CPU offload (queue one or perf1) beside the learning proof or another 7B run:
                # refused unless MIX_OK=1. Twelfth session: beside it, even on its own GPU, the learning proof's warm-up
                # ran ~10x slower and never reached GRPO. Twenty-first session: its fp32 weights, gradients and Adam
                # held ~200 GB of the 251 GB host, and beside the LoRA queue Ray's memory monitor killed both
                # (docs/gpu-runs.md); with hook V alone the host had 165-190 GB in use (twenty-second session), 121-166
                # GB once hook V reused its host buffers (twenty-third)
  local q lp="" other="" offload="" queues=${QUEUES:-gpu23,one,bench}
  for q in ${queues//,/ }; do
    case $q in lp*|gpu0|gpu1|probe) lp=$q ;; one|perf1) offload=$q ;; lora|lorab|gpu23|x8) other=$q ;; esac
  done
  # a host of 400 GiB or more (nvidia-h200-x4: 512) holds the offloaded 7B and another 7B run
  [ -n "$other" ] && [ "$(awk '/MemTotal/ {print int($2 / 1048576)}' /proc/meminfo)" -ge 400 ] && other=""
  [ -n "$offload" ] && [ -n "$lp$other" ] && [ "${MIX_OK:-0}" != 1 ] || return 1
  if [ -n "$lp" ]; then
    echo "refused: queue $lp (the learning proof) beside queue $offload (the 7B with its optimizer in host memory)" \
         "starves the learning proof; run them in separate sessions, or set MIX_OK=1" >&2
  else
    echo "refused: queue $other (a 7B run) beside queue $offload (the 7B with its optimizer in host memory," \
         "120-170 GB of it): the host runs out; run them in separate sessions, or set MIX_OK=1" >&2
  fi
}

cleanup_machine() {  # every verl, Ray and vLLM process on the machine: the lent GPU host runs nothing else.
                    # MACHINE_CLEANUP=0 leaves them alone, for a shared machine (the tests, beside other runs)
  [ "${MACHINE_CLEANUP:-1}" = 0 ] && return 0
  pkill -f "verl.trainer.main_ppo"; python3 -m ray.scripts.scripts stop --force > /dev/null 2>&1
  pkill -9 -f "EngineCore|VLLM::"
}

case $CMD in
start)
  mix_refused && exit 2
  rm -rf "$S"; mkdir -p "$S"
  echo $(( $(date +%s) + ${2:-24} * 60 )) > "$S/deadline"
  OUT=$S setsid nohup bash "$0" run > "$S/session.log" 2>&1 < /dev/null &
  sleep 5; cat "$S/session.log"; echo "queues started; deadline $(date -u -d @"$(cat "$S/deadline")" +%H:%M:%S) UTC"
  exit 0 ;;
wait)
  end=$(( $(date +%s) + ${2:-540} ))
  while [ ! -f "$S/all-done" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 10; done
  cat "$S/session.log"; echo "== jobs"; cat "$S/jobs.tsv" 2>/dev/null
  [ -f "$S/all-done" ] && echo "ALL DONE: give the machine back" || echo "still running"
  pack; exit 0 ;;
stop)
  echo 0 > "$S/deadline"; pkill -f "parallel_session.sh run"; sleep 1
  cleanup_machine; pack; exit 0 ;;
run) ;;  # below: the detached body
*) echo "unknown command $CMD (start | wait | stop)" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------------------------------------- detached body
. "$HERE/session_env.sh"   # installs the plugin once; LOGS=$OUT=$S, W (work dir), R1AQA, REPO
export PYTHONUNBUFFERED=1
left() {  # seconds to the deadline, minus $1
  local s=$(( $(cat "$S/deadline") - $(date +%s) - ${1:-0} )); echo $((s > 1 ? s : 1))
}
step() {  # step NAME FUNCTION...: one job of a queue, logged to $S/NAME.log, skipped when the time is up
  local name=$1; shift
  if [ "$(left)" -le 60 ]; then printf '%s\tskipped (time)\n' "$name" >> "$S/jobs.tsv"; return 1; fi
  local t0=$SECONDS; echo "$(date -u +%H:%M:%S) start $name (GPU $CUDA_VISIBLE_DEVICES)"
  "$@" > "$S/$name.log" 2>&1; local rc=$?
  printf '%s\tgpus=%s\texit=%s\t%ss\n' "$name" "$CUDA_VISIBLE_DEVICES" "$rc" $((SECONDS - t0)) >> "$S/jobs.tsv"
  echo "$(date -u +%H:%M:%S) end $name: exit $rc after $((SECONDS - t0)) s"
  return $rc
}

make7b() {  # on the GPU (random init there takes seconds, on the CPU minutes); once, whichever queue comes first
  ( flock 9
    [ -f "$W/syn10.parquet" ] && exit 0
    /usr/bin/time -f "make-model 7b: %e s, max RSS %M KB" timeout "$(left 5)" $R1AQA make-model --size 7b \
      --out "$W/7b" || exit 1
    $R1AQA data build synthetic-aqa --tasks sound --size 64 --clip-seconds 10 --seed 3 --no-progress \
      --out "$W/syn10.parquet" && du -sh "$W/7b" ) 9> "$W/make7b.lock"
}

grpo7b() {  # grpo7b NGPU VARIANTS: benchmarks/grpo_step_bench.py at R1-AQA's shape (STEPS, default 3); GRPO_CAP
            # (seconds) bounds one run, so a stuck variant leaves the queue's later jobs their time; STACKS=1
            # samples every process's stacks (packed as grpo-VARIANTS-NGPU/stacks.md by stack_report.py)
  make7b || return 1
  local t; t=$(left 5); [ -n "${GRPO_CAP:-}" ] && [ "$GRPO_CAP" -lt "$t" ] && t=$GRPO_CAP
  [ "${STACKS:-0}" = 1 ] && local R1AQA_STACKS_DIR=$S/grpo-${2//,/+}-$1gpu/stacks \
    PYTHONPATH=$REPO/benchmarks/stack_sampler:$PYTHONPATH && export R1AQA_STACKS_DIR PYTHONPATH
  python3 "$REPO/benchmarks/grpo_step_bench.py" run --model "$W/7b" --data "$W/syn10.parquet" --gpus "$1" \
    --steps "${STEPS:-3}" --variants "$2" --logs "$S" --cwd "$W" --timeout "$t" \
    --json "$S/grpo-${2//,/+}-$1gpu.json" --extra "trainer.default_local_dir=$W/ckpt-7b-$2-$1gpu"
}

rollout() {  # rollout [NAME [MODES]]: $S/NAME.json (default rollout), every mode unless MODES; each mode is limited
            # to 200 s (RESULT lines are printed as modes end)
  timeout -k 10 "$(left 5)" python3 "$REPO/benchmarks/rollout_bench.py" --size 7b --batch 16 --n 8 --tokens 256 \
    --clip-seconds 10 --hf-prompts 2 --workdir "$W" --timeout 200 --json "$S/${1:-rollout}.json" ${2:+--modes "$2"}
}

dedup() {  # hook I side by side on one 7B micro-batch (random weights built on the GPU)
  timeout -k 10 "$(left 5)" python3 "$REPO/benchmarks/encoder_dedup_bench.py" --size 7b --json "$S/dedup.json"
}
dedup_small() {  # hook I at the learning proof's reference micro-batch (128 rows over 16 clips of 4 s): is its
                 # host-device sync a cost where the encoder is 8M parameters? (stack samples, docs/gpu-runs.md)
  timeout -k 10 "$(left 5)" python3 "$REPO/benchmarks/encoder_dedup_bench.py" --size small --micro 128 \
    --distinct 16,128 --tokens 10 --clip-seconds 4 --json "$S/dedup-small.json"
}
feature_transfer() {  # hook P side by side: one step's actor features as full 30 s windows or cut, incl. the GPU copy
  timeout -k 10 "$(left 5)" python3 "$REPO/benchmarks/feature_transfer_bench.py" --json "$S/feature-transfer${LP_TAG:-}.json"
}
unit_overhead() {  # host time per FSDP1 / FSDP2 unit on the GPU (the LoRA update's suspect: FSDP1 wraps every adapter)
  timeout -k 10 "$(left 5)" python3 "$REPO/benchmarks/fsdp_unit_overhead.py" --device cuda --json "$S/unit-overhead.json"
}
optimizer_stream() {  # hook V side by side: AdamW with its state on the GPU, streamed, streamed with overlapped copies
  timeout -k 10 "$(left 5)" python3 "$REPO/benchmarks/optimizer_stream_bench.py" --json "$S/optimizer-stream.json"
}
gpu_hooks() {  # tests/test_gpu_hooks.py: hooks P, R, S, T, U, V, X, Y and AA on the GPU (bf16 logits; FSDP's real
              # wrapping, FSDP2's CPU offload policy, the LoRA sync, the optimizer state between host and GPU, Liger,
              # device syncs); GPU_HOOKS_K selects tests (pytest -k)
  ( cd "$REPO" && timeout -k 10 "$(left 5)" python3 -m pytest -m gpu tests/test_gpu_hooks.py -v -p no:cacheprovider \
      --basetemp="$W/pt-gpu-hooks" ${GPU_HOOKS_K:+-k "$GPU_HOOKS_K"} )
}
merge_bench() {  # hook Y side by side on one 7B micro-batch of 8 and of 16 rows (random weights built on the GPU)
  timeout -k 10 "$(left 5)" python3 "$REPO/benchmarks/audio_merge_bench.py" --size 7b --micro 8,16 \
    --json "$S/merge.json"
}

causal_bench() {  # hook AA (HOOK=shared: AB) side by side on one 7B micro-batch of 16 ragged rows through verl's
                  # padded path; CUDNN_SDP=on leaves sdpa's cuDNN kernels on (verl's workers have them off)
  timeout -k 10 "$(left 5)" python3 "$REPO/benchmarks/causal_attention_bench.py" --hook "${HOOK:-causal}" \
    --size 7b --micro 16 --cudnn-sdp "${CUDNN_SDP:-off}" --json "$S/${HOOK:-causal}-cudnn-${CUDNN_SDP:-off}.json"
}

lp() {  # lp PHASE: learning proof phase (examples/learning_proof/run.sh) of arm $LP_ARM (default lp: the recipe
        # as shipped) with $LP_EXTRA overrides; logs in $S/$LP_ARM, work dir $W/$LP_ARM
  local arm=${LP_ARM:-lp}
  OUT=$S/$arm WORK=$W/$arm NO_FLASH_ATTN=1 EXTRA_OVERRIDES="${LP_EXTRA:-}" timeout -k 10 "$(left 5)" \
    bash "$REPO/examples/learning_proof/run.sh" "$@"
}
lp_grpo() {  # leaves ~3 min for export + eval after + plots; STACKS=1 samples every process's stacks (stack_report)
  ( if [ "${STACKS:-0}" = 1 ]; then
      export R1AQA_STACKS_DIR=$S/${LP_ARM:-lp}/stacks PYTHONPATH=$REPO/benchmarks/stack_sampler:$PYTHONPATH
    fi
    GRPO_TIMEOUT=$(left 200) lp grpo )
}

contrast() {  # contrast NAME: tests/test_gpu_grpo.py, same audio vs another sample's audio for the actor
  cd "$REPO" && timeout -k 10 "$(left 5)" python3 -m pytest -m gpu tests/test_gpu_grpo.py -v -p no:cacheprovider \
    --basetemp="$W/pt-$1"
  local rc=$?
  for f in "$W/pt-$1"/gpu-grpo*/*.log; do [ -f "$f" ] && cp "$f" "$S/$1-$(basename "$f")"; done
  python3 "$REPO/benchmarks/gpu/contrast_table.py" "$S/$1-same-audio.log" "$S/$1-wrong-audio.log"
  return $rc
}

QUEUE_gpu0() {  # learning proof GRPO on the music tasks only (instrument: learnable in ~2,400 supervised examples)
  export CUDA_VISIBLE_DEVICES=0 LP_ARM=lp-music TRAIN_TASKS=music
  step lp-music-prep lp prep && step lp-music-grpo lp_grpo; step lp-music-after lp after
}
QUEUE_gpu1() {  # learning proof GRPO on all tasks (the recipe as shipped)
  export CUDA_VISIBLE_DEVICES=1 LP_ARM=lp-all TRAIN_TASKS=sound,music
  step lp-prep lp prep && step lp-grpo lp_grpo; step lp-after lp after
}
# Sharing one GPU: a 0.2B model's vLLM needs ~1 GB of KV cache for 256 x 404 tokens; a fixed size skips vLLM's
# start-up memory profile, which asserts when another process on the GPU frees memory meanwhile.
LP_SHARE="actor_rollout_ref.rollout.gpu_memory_utilization=0.1 +actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes=3221225472"
lp_shared_prep() {  # the one-GPU learning-proof queues: shared prep on GPU $LP_GPU (default 0), its warm-up; LP_TAG
                    # (default none) is added to every name of lp2's (folders, logs), so that two replicates can run
  export CUDA_VISIBLE_DEVICES=${LP_GPU:-0} PREP=$W/lp-prep${LP_TAG:-} EVAL_KV_GIB=2 EVAL_GPU_MEM=0.1
  LP_ARM=lp-prep${LP_TAG:-} step "lp-warm${LP_TAG:-}" lp warm
}
start_slot() {  # start_slot CMD...: run CMD (which starts a verl run or an eval in the background) holding the host's
                # start-up lock for LP_STAGGER s (default 30): Ray clusters and vLLM servers, of this queue or another,
                # pick their ports one after the other
  exec 8> "$W/start.lock"; flock 8; "$@"; sleep "${LP_STAGGER:-30}"; flock -u 8; exec 8>&-
}
lp_before_bg() {  # the eval before, in the background
  ( LP_ARM=lp-prep${LP_TAG:-} step "lp-before${LP_TAG:-}" lp before ) &
}
lp_shared_arm() {  # lp_shared_arm ARM [TRAIN_TASKS [OVERRIDES...]]: GRPO then eval after, in the background,
                   # sharing the GPU; OVERRIDES are more Hydra overrides for this arm's main_ppo
  local arm=$1 tasks=${2:-}; shift $(($# < 2 ? $# : 2))
  ( export LP_ARM=$arm LP_EXTRA="$LP_SHARE${*:+ $*}"; [ -n "$tasks" ] && export TRAIN_TASKS=$tasks
    step "$arm-grpo" lp_grpo; step "$arm-after" lp after ) &
}
QUEUE_lp1() {  # learning proof, two GRPO arms on one GPU (GPU $LP_GPU, default 0), the recipe's own settings
  lp_shared_prep || return 1
  start_slot lp_shared_arm lp-music music
  start_slot lp_before_bg
  start_slot lp_shared_arm lp-all sound,music
  wait
}
# The GRPO update itself in plain torch (examples/learning_proof/grpo_rehearsal.py), several settings side by side on
# the same GPU as the verl arm: each runs until the deadline, logging every step (a sweep of what the CPU takes
# 30 s a step for). REH_SWEEP: "name:model:lr[:extra,args]" entries, space-separated (commas in the extra args
# become spaces); model is a folder of PREP. The default: the recipe's own setting (a check of the rehearsal against
# the verl arm beside it) and one variant. The fifth session's five (listen-1e-4:small-warm:1e-4 listen-3e-4:...
# listen-1e-3:... fmt-3e-4:small-fmt:3e-4 listen-3e-4-kl:small-warm:3e-4:--kl-coef,0.04) starved the verl arm.
REH_SWEEP=${REH_SWEEP-"recipe:small-warm:3e-4:--kl-coef,0.04 lr5e-4-kl:small-warm:5e-4:--kl-coef,0.04"}
rehearse() {  # rehearse NAME MODEL LR [ARGS...]: GRPO rehearsal on PREP's data until the deadline
  local name=$1 model=$2 lr=$3; shift 3
  # 2 threads each: five untethered torch processes took the host's 16 cores and starved verl's start-up (2026-11-29)
  OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 timeout -k 10 "$(left 90)" python3 "$REPO/examples/learning_proof/grpo_rehearsal.py" --model "$PREP/$model" \
    --data "$PREP/train.parquet" --val "$PREP/val.parquet" --val-rows 240 --val-every 10 --steps 2000 \
    --prompts 32 --lr "$lr" --out "$S/reh-$name.jsonl" "$@"
  local rc=$?; [ $rc -eq 124 ] && return 0; return $rc   # stopped by the deadline: the expected end
}
QUEUE_lps() {  # learning proof on one GPU: warm-up (format + listening), the verl arm on all tasks, the eval before,
               # and the rehearsal sweep REH_SWEEP, all side by side (GPU $LP_GPU, default 0)
  export LISTEN_TASKS=${LISTEN_TASKS:-sound,music}   # the fifth session's setting: listening on every task
  lp_shared_prep || return 1
  start_slot lp_shared_arm lp-all sound,music
  lp_before_bg
  local entry name model lr extra
  for entry in $REH_SWEEP; do
    IFS=: read -r name model lr extra <<< "$entry"
    ( step "reh-$name" rehearse "$name" "$model" "$lr" ${extra//,/ } ) &
    sleep "${LP_STAGGER:-5}"
  done
  wait
}
# LP_ARMS: the verl arms of queue lp2, "name:train_tasks[:override;override...]" entries, space-separated (";" in the
# overrides become spaces). The default: the recipe as shipped, alone (two arms sharing the GPU doubled each one's step,
# sixth session), on run.sh's training tasks (TRAIN_TASKS, default TASKS, default beep count, instrument and spoken
# language: the thirteenth run, which met issue 8's acceptance in both seeds of QUEUES=lp2,lp2b; the speech family
# needs benchmarks/gpu/stage_espeak.sh's carried espeak-ng).
LP_ARMS=${LP_ARMS-"lp-a:${TRAIN_TASKS:-${TASKS:-beep_count,instrument,spoken_language}}"}
logprob_bench() {  # hook M side by side with verl's per-row loop (a minute at most)
  timeout -k 10 "$(left 5)" python3 "$REPO/benchmarks/logprob_bench.py" --json "$S/logprob.json"
}
wait_for() {  # wait_for PID [MAX_S]: until PID (not a child of this shell) ends, at most MAX_S seconds (default 600)
  local waited=0
  while kill -0 "$1" 2> /dev/null && [ $waited -lt "${2:-600}" ]; do sleep 1; waited=$((waited + 1)); done
}
trim_gate() {  # trim_gate PID: after the benches (PID; at most TRIM_GATE_WAIT s more, default 120), keep hook P for
               # the arms only if the feature bench's model check found the cut features' logits equal on this GPU;
               # else export R1AQA_TRIM_FEATURES=0, loudly
  [ "${FEATURE_BENCH:-1}" = 0 ] && return 0
  wait_for "$1" "${TRIM_GATE_WAIT:-120}"
  if python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["model_check"]["equal"] else 1)' \
      "$S/feature-transfer${LP_TAG:-}.json" 2> /dev/null; then
    echo "$(date -u +%H:%M:%S) hook P checked on this GPU: logits equal; the arms cut their features"
  else
    export R1AQA_TRIM_FEATURES=0
    echo "$(date -u +%H:%M:%S) hook P's model check failed or did not run ($S/feature-transfer${LP_TAG:-}.log):" \
         "the arms run with R1AQA_TRIM_FEATURES=0"
  fi
}
QUEUE_lp2() {  # learning proof on one GPU: warm-up (format + listening), then the verl arms LP_ARMS and the eval
               # before side by side, then each arm's eval after (GPU $LP_GPU, default 0); no rehearsals. The
               # token log-prob bench (LOGPROB_BENCH=0 skips it), the small encoder-dedup bench (DEDUP_BENCH=0) and
               # the feature-transfer bench (FEATURE_BENCH=0) run one after the other beside the warm-up's start;
               # the last one decides whether the arms use hook P (trim_gate); then the GPU tests of hooks P and R
               # (HOOK_TESTS=0 skips them)
  ( export CUDA_VISIBLE_DEVICES=${LP_GPU:-0}
    [ "${LOGPROB_BENCH:-1}" = 0 ] || step "logprob-bench${LP_TAG:-}" logprob_bench
    [ "${DEDUP_BENCH:-1}" = 0 ] || step "dedup-small${LP_TAG:-}" dedup_small
    [ "${FEATURE_BENCH:-1}" = 0 ] || step "feature-transfer${LP_TAG:-}" feature_transfer ) &
  local benches=$!
  ( export CUDA_VISIBLE_DEVICES=${LP_GPU:-0}; wait_for "$benches"
    [ "${HOOK_TESTS:-1}" = 0 ] || step "gpu-hooks${LP_TAG:-}" gpu_hooks ) &
  lp_shared_prep || return 1
  trim_gate "$benches"
  local entry name tasks extra
  for entry in $LP_ARMS; do
    IFS=: read -r name tasks extra <<< "$entry"
    start_slot lp_shared_arm "$name${LP_TAG:-}" "$tasks" ${extra//;/ }
  done
  start_slot lp_before_bg
  wait
}
QUEUE_lp2b() {  # an independent replicate of lp2 beside it (QUEUES=lp2,lp2b on `nvidia-h200-x2`): seed SEED_B
                # (default 1: its own random model, data and warm-up; verl's seeds stay the recipe's) on GPU
                # $LP_GPU_B (default 1), names tagged -sSEED, without the benches (lp2 runs them; hook P stays on).
                # ENV_B: "VAR=value ..." exported for this replicate only: a speed switch timed beside lp2 (e.g.
                # ENV_B=R1AQA_REF_ON_GPU=0: verl's offloaded reference, hook R being run.sh's default since the
                # tenth run), or one run.sh setting compared beside it (e.g. ENV_B=LISTEN_STEPS=3000)
  export SEED=${SEED_B:-1} LP_GPU=${LP_GPU_B:-1} LP_TAG=-s${SEED_B:-1}
  export LOGPROB_BENCH=0 DEDUP_BENCH=0 FEATURE_BENCH=0 HOOK_TESTS=0
  local kv
  for kv in ${ENV_B:-}; do export "$kv"; echo "$(date -u +%H:%M:%S) lp2b: $kv"; done
  QUEUE_lp2
}
QUEUE_probe() {  # learnability probe: supervised on the correct answers of every task (GPU $PROBE_GPU, default 0)
  export CUDA_VISIBLE_DEVICES=${PROBE_GPU:-0} LP_ARM=lp-probe PROBE_STEPS=600   # ~1.2 s a step on a busy host
  step lp-probe-prep lp prep && step lp-probe lp probe
}
QUEUE_one() {  # 7B GRPO on one GPU (full fine-tuning needs the AdamW state off the GPU): prof1liger (wins1liger,
              # hook X: Liger's kernels in the decoder; its step 4 profiled: is the 16-row update still launch-bound?),
              # wins1liger with hook Y off (the control), wins1keep8 and wins1enc (hook Z), wins1big (without Liger),
              # wins1fast (no recompute), prof1: 4 steps of wins1vref (train_h200.sh 1 WINS=1 MICRO=8 LIGER=0: hook V
              # streams the state through the step, the reference on the GPU), the last under the torch profiler;
              # wins1v (the reference offloaded), then wins1acc with stack samples (the whole actor on FSDP2's CPU
              # offload, one gradient reduction a step), then wins1 (one a micro-batch) for the side by side; queue
              # hooks's jobs first unless it runs beside (QUEUES=one,hooks)
  export CUDA_VISIBLE_DEVICES=${ONE_GPU:-0}
  case ",${QUEUES:-}," in *,hooks,*) ;; *) hook_jobs ;; esac
  STEPS=4 step grpo-prof1liger-1gpu grpo7b 1 prof1liger   # first, so that the deadline cannot cut it
  step grpo-wins1scatter-1gpu grpo7b 1 wins1scatter   # the control beside it: hook Y off
  step grpo-wins1keep8-1gpu grpo7b 1 wins1keep8   # hook Z: the encoder and the decoder's last 8 layers kept
  step grpo-wins1enc-1gpu grpo7b 1 wins1enc   # hook Z: the encoder kept only
  step grpo-wins1big-1gpu grpo7b 1 wins1big
  step grpo-wins1fast-1gpu grpo7b 1 wins1fast
  STEPS=4 step grpo-prof1-1gpu grpo7b 1 prof1   # wins1vref, the control beside it (steps 2-3), step 4 profiled
  step grpo-wins1v-1gpu grpo7b 1 wins1v   # the bf16 reference offloaded, as verl does
  STACKS=${STACKS:-1} step grpo-wins1acc-1gpu grpo7b 1 wins1acc; step grpo-wins1-1gpu grpo7b 1 wins1
}
hook_jobs() {  # the GPU tests of the hooks and the two benches behind hooks T and V (~4 min, little host memory but
               # the optimizer bench's ~70 GB of pinned state for a minute)
  [ "${HOOK_TESTS:-1}" = 0 ] || step gpu-hooks gpu_hooks   # ~2 min: FSDP2's CPU offload, hooks T, U and V, tiny model
  step unit-overhead unit_overhead   # seconds
  step optimizer-stream optimizer_stream   # ~2 min: hook V's step at the 7B's size, sequential and overlapped
}
QUEUE_hooks() {  # hook_jobs on GPU $HOOKS_GPU (default 1) while queue one's first 7B run starts up on its own GPU
  export CUDA_VISIBLE_DEVICES=${HOOKS_GPU:-1}
  hook_jobs
}
QUEUE_lora() {  # the LoRA recipe on one GPU: FSDP2 (hook U), FSDP1 (unless queue lorab runs it beside), both with hook
               # T's out-of-place merge, then FSDP1 with verl's in-place merge (hook T off)
  export CUDA_VISIBLE_DEVICES=${LORA_GPU:-1}
  step grpo-lora1fsdp2-1gpu grpo7b 1 lora1fsdp2
  case ",${QUEUES:-}," in *,lorab,*) ;; *) step grpo-lora1-1gpu grpo7b 1 lora1 ;; esac
  step grpo-lora1verl-1gpu grpo7b 1 lora1verl
}
QUEUE_lorab() {  # lora1 on GPU $LORA_B_GPU (default 0) at the same time as queue lora's lora1fsdp2 (QUEUES=lora,lorab):
                 # FSDP1 against FSDP2 under the same host load (the LoRA update looked host-bound, 21st session)
  export CUDA_VISIBLE_DEVICES=${LORA_B_GPU:-0}
  step grpo-lora1-1gpu grpo7b 1 lora1
}
QUEUE_perf1() {  # issue 7 on the second GPU of `nvidia-h200-x2`: the 7B step on one GPU (wins1, at most GRPO_CAP s,
                 # default 780), the rollout bench, then wins1ref (hook R)
  export CUDA_VISIBLE_DEVICES=${ONE_GPU:-1}
  GRPO_CAP=${GRPO_CAP:-780} step grpo-wins1-1gpu grpo7b 1 wins1; step rollout rollout
  step grpo-wins1ref-1gpu grpo7b 1 wins1ref
}
QUEUE_gpu23() {  # the baseline first (the nineteenth session's was cut), then the profiled winsfast
  export CUDA_VISIBLE_DEVICES=${PAIR_GPUS:-2,3}   # PAIR_GPUS=0,1 on nvidia-h200-x2
  step grpo-baseline-2gpu grpo7b 2 baseline; step grpo-prof-2gpu grpo7b 2 prof   # grpo7b builds the 7B once
  step grpo-fsdp2fast-2gpu grpo7b 2 fsdp2fast; step grpo-winsfast-2gpu grpo7b 2 winsfast
}
QUEUE_kv() {  # the rollout bench's bare vLLM against the same engine with an fp8 KV cache (GPU $BENCH_GPU, default
              # 0): what an fp8 KV cache would gain in generation; fits nvidia-h200 (no FSDP, little host memory).
              # Twenty-fifth session: 3.78 s against 3.87, no gain
  export CUDA_VISIBLE_DEVICES=${BENCH_GPU:-0}
  step rollout-kv rollout rollout-kv vllm,vllm-kvfp8
}
QUEUE_small() {  # the 7B on nvidia-h200 (128 GiB host, GPU 0), 2 + 2 agent-loop and reward workers: the 1-GPU line
                 # (wins1smallkeep8, hooks X, Y, Z, AA), then the same with hook AA off (its control on one machine),
                 # then 12 decoder layers kept. The twenty-sixth session ran wins1small and wins1smallkeep8 here,
                 # the twenty-fifth prof1small (step 3 profiled)
  export CUDA_VISIBLE_DEVICES=0
  STEPS=4 step grpo-wins1smallkeep8-1gpu grpo7b 1 wins1smallkeep8
  STEPS=4 step grpo-wins1smallkeep8mask-1gpu grpo7b 1 wins1smallkeep8mask
  STEPS=3 step grpo-wins1smallkeep12-1gpu grpo7b 1 wins1smallkeep12
}
QUEUE_shared() {  # hook AB on nvidia-h200 (GPU 0), 2 + 2 workers: its GPU test, the 1-GPU line with it at update
                  # micro-batches of 32 and of 16, its control (hook AB off, = the twenty-sixth session's
                  # wins1smallkeep8), then its bench (one 7B micro-batch of 16 rows, separate -> packed) if time is left
  export CUDA_VISIBLE_DEVICES=0
  GPU_HOOKS_K=shared step gpu-hooks-shared gpu_hooks
  STEPS=4 step grpo-wins1smallshared32-1gpu grpo7b 1 wins1smallshared32
  STEPS=3 step grpo-wins1smallshared-1gpu grpo7b 1 wins1smallshared
  STEPS=3 step grpo-wins1smallnoshared-1gpu grpo7b 1 wins1smallnoshared
  HOOK=shared step shared-bench causal_bench
}
QUEUE_causal() {  # hook AA on one GPU (GPU 0, nvidia-h200): its GPU test, the bench with sdpa's cuDNN kernels off
                  # (as in verl's workers) and on, then wins1smallmask (wins1small with hook AA off: the control)
  export CUDA_VISIBLE_DEVICES=0
  GPU_HOOKS_K=flash step gpu-hooks-causal gpu_hooks; step causal-bench causal_bench
  CUDNN_SDP=on step causal-bench-cudnn causal_bench
  STEPS=3 step grpo-wins1smallmask-1gpu grpo7b 1 wins1smallmask
}
QUEUE_merge() {  # hook Y on one GPU ($BENCH_GPU, default 0): its GPU test, then the side-by-side bench; fits
                 # nvidia-h200 (no verl run, little host memory)
  export CUDA_VISIBLE_DEVICES=${BENCH_GPU:-0}
  GPU_HOOKS_K=merge step gpu-hooks-merge gpu_hooks; step merge-bench merge_bench
}
QUEUE_bench() {
  export CUDA_VISIBLE_DEVICES=${BENCH_GPU:-1}
  step rollout rollout; step dedup dedup; step feature-transfer feature_transfer
}
QUEUE_contrast() {
  export CUDA_VISIBLE_DEVICES=${CONTRAST_GPUS:-2,3}   # the test puts its two runs on one GPU each
  step contrast-tiny contrast tiny
}

QUEUE_x8() {  # issue 9 on `nvidia-h200-x8` (QUEUES=x8): R1-AQA's 8-GPU shape, then the scaling points
  export CUDA_VISIBLE_DEVICES=0
  step make7b make7b
  export CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7
  STEPS=5 step grpo-wins-8gpu grpo7b 8 wins; STEPS=5 step grpo-baseline-8gpu grpo7b 8 baseline
  export CUDA_VISIBLE_DEVICES=0,1,2,3
  step grpo-wins-4gpu grpo7b 4 wins
}

# QUEUE_FILE: a bash file defining more QUEUE_<name> functions (other plans; the scheduler's own test uses one)
[ -n "${QUEUE_FILE:-}" ] && . "$QUEUE_FILE"
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv > "$S/gpus.csv" 2>/dev/null
echo "$(date -u +%H:%M:%S) queues ${QUEUES:-gpu23,one,bench}, $(left) s to the deadline"
IFS=, read -r -a queues <<< "${QUEUES:-gpu23,one,bench}"
# Each queue gets its own equal slice of the host's cores (CPU_SPLIT=0: all share them). The twelfth session ran the
# learning proof beside the 7B on one GPU (FSDP2 with the parameters and Adam on the CPU) unsplit: the warm-up's
# steps took ~10x their time alone and the 7B's start-up 12 min instead of 5 (docs/gpu-runs.md). Affinity is
# inherited by every process a queue starts (Ray, vLLM, torch, whose default thread count follows it).
cpu_slice() {  # cpu_slice I N: the I-th of N equal slices of the cores this process may use, as taskset's list
  python3 -c 'import os, sys; i, n = map(int, sys.argv[1:]); c = sorted(os.sched_getaffinity(0)); k = len(c) // n
print(",".join(map(str, c[i * k:(i + 1) * k])))' "$1" "$2"
}
for i in "${!queues[@]}"; do
  ( cores=""; [ "${CPU_SPLIT:-1}" = 1 ] && [ ${#queues[@]} -gt 1 ] && cores=$(cpu_slice "$i" ${#queues[@]})
    if [ -n "$cores" ]; then
      if taskset -cp "$cores" "$BASHPID" > /dev/null; then echo "$(date -u +%H:%M:%S) queue ${queues[$i]}: cores $cores"
      else echo "$(date -u +%H:%M:%S) queue ${queues[$i]}: taskset failed, it shares every core"; fi
    fi
    "QUEUE_${queues[$i]}" ) &
  sleep "${STAGGER:-20}"   # Ray clusters and vLLM servers pick their ports one after the other
done
wait
cleanup_machine
echo "$(date -u +%H:%M:%S) all queues done"; touch "$S/all-done"
