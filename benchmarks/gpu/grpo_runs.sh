#!/usr/bin/env bash
# GRPO through the plugin on the lent H200 machine (no network there; verl + vLLM come from
# ../shared/gpu/stage-wheels and are installed by its install-on-device into /tmp/site).
#
#   bash benchmarks/gpu/grpo_runs.sh install       # the plugin itself into /tmp/r1aqa-site, then `r1aqa doctor`
#   bash benchmarks/gpu/grpo_runs.sh tiny          # tiny Qwen2-Audio, synthetic sound tasks, 5 steps, checkpoint
#   bash benchmarks/gpu/grpo_runs.sh tiny-reversed # same, 3 steps, actor hears each clip time-reversed (diagnostic)
#   bash benchmarks/gpu/grpo_runs.sh 7b [NGPU]     # Qwen2-Audio-7B architecture (random), R1-AQA's shape, 2 steps
#
# Logs go to $OUT (or ./gpu-logs). flash-attn cannot be installed on that machine, hence sdpa and no
# remove-padding (verl's packed path needs flash-attn's varlen kernels). That machine has transformers 5.17
# (verl 0.9.1 pins <5.11), whose Qwen2AudioConfig lacks the top-level tie_word_embeddings verl reads.
set -uo pipefail
STAGE=${1:?stage}; NGPU=${2:-1}
. "$(dirname "$0")/session_env.sh"
MACHINE=(+actor_rollout_ref.model.override_config.attn_implementation=sdpa
         +actor_rollout_ref.model.override_config.tie_word_embeddings=False
         actor_rollout_ref.model.use_remove_padding=False
         trainer.logger='[console]' trainer.default_local_dir="$W/ckpt-$STAGE")

grpo() {  # grpo LOGNAME overrides...
  local log=$LOGS/$1.log; shift
  ( cd "$W" && /usr/bin/time -v python3 -m verl.trainer.main_ppo "$@" "${MACHINE[@]}" ) > "$log" 2>&1
  local rc=$?
  echo "main_ppo exit $rc; metrics:"; grep -E "^\(TaskRunner.*step:|step:[0-9]+ -" "$log" | tail -n 8 | cut -c1-3000
  grep -E "\[r1aqa pid" "$log" | sort -u | head -n 12
  grep -E "Maximum resident|Elapsed \(wall" "$log"
  [ $rc -eq 0 ] || tail -n 60 "$log"
  return $rc
}

case $STAGE in
install)
  $R1AQA doctor 2>&1 | grep -v "^INFO" | tee "$LOGS/doctor.log"
  ;;
tiny|tiny-reversed)
  [ -f "$W/tiny/model.safetensors" ] || $R1AQA make-model --size tiny --out "$W/tiny"
  [ -f "$W/syn-train.parquet" ] || $R1AQA data build synthetic-aqa --tasks sound --size 128 --seed 1 --no-progress --out "$W/syn-train.parquet"
  [ -f "$W/syn-val.parquet" ] || $R1AQA data build synthetic-aqa --tasks sound --size 32 --seed 2 --split val --no-progress --out "$W/syn-val.parquet"
  steps=5; [ "$STAGE" = tiny-reversed ] && { steps=3; export R1AQA_DIAG_ACTOR_AUDIO=reverse; }
  grpo "$STAGE" +recipe=r1aqa_grpo_tiny data.train_files="$W/syn-train.parquet" data.val_files="$W/syn-val.parquet" \
    actor_rollout_ref.model.path="$W/tiny" trainer.total_training_steps=$steps trainer.save_freq=$steps
  ls -R "$W/ckpt-$STAGE" 2>/dev/null | head -n 20
  ;;
7b)
  [ -f "$W/7b/config.json" ] || { /usr/bin/time -f "make-model 7b: %e s, max RSS %M KB" $R1AQA make-model --size 7b --out "$W/7b"; }
  [ -f "$W/syn10.parquet" ] || $R1AQA data build synthetic-aqa --tasks sound --size 64 --clip-seconds 10 --seed 3 --no-progress --out "$W/syn10.parquet"
  grpo "7b-${NGPU}gpu" +recipe=r1aqa_grpo data.train_files="$W/syn10.parquet" data.val_files="$W/syn10.parquet" \
    actor_rollout_ref.model.path="$W/7b" trainer.n_gpus_per_node="$NGPU" trainer.total_training_steps=2 \
    trainer.val_before_train=False trainer.test_freq=-1 trainer.save_freq=-1 \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=$([ "$NGPU" = 1 ] && echo True || echo False) \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4 ${EXTRA_OVERRIDES:-}
  ;;
*) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
