#!/usr/bin/env bash
# The same recipe on 1 or 2 H200 (141 GB). Same batch (16 prompts x 8) and maths: only placement changes.
# Measured on the lent H200s (docs/benchmarks.md, 7B architecture, random weights):
# - 2 GPUs: FSDP shards fp32 weights + grads + AdamW (~134 GB) over both; the optimizer stays on the GPUs: peak
#   80.7 GB allocated per GPU, 42.5 s per step with the recipe as is, 29.4 s with the "wins" overrides below
#   (docs/benchmarks.md).
# - 1 GPU: weights + grads + AdamW do not fit, and verl's optimizer_offload brings the AdamW state back to the GPU
#   for each step (CUDA OOM, measured). This script therefore puts the whole actor on FSDP2's CPU offload policy:
#   weights stream in per layer and the AdamW step runs on the CPU (host RAM >= 192 GB). NOT YET RUN end to end.
# verl always keeps the reference model's weights in host memory (it streams them per micro-batch).
#
#   bash examples/train_h200.sh NGPU [extra Hydra overrides]        # NGPU: 1 or 2
#   bash examples/train_h200.sh 2 trainer.total_training_steps=500
#   WINS=1 bash examples/train_h200.sh 2                            # + the measured speed-ups (docs/benchmarks.md)
# Env: as examples/train_8x80gb.sh.
set -euo pipefail
NGPU=${1:?usage: train_h200.sh NGPU(1|2) [overrides]}; shift
case $NGPU in 1|2) ;; *) echo "train_h200.sh: NGPU must be 1 or 2 (8 GPUs: examples/train_8x80gb.sh)" >&2; exit 2 ;; esac
DATA=${DATA:-data}
PLACE=()
[ "$NGPU" = 1 ] && PLACE=(actor_rollout_ref.actor.strategy=fsdp2 actor_rollout_ref.actor.fsdp_config.offload_policy=True
                          actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16)
# bypass: the rollout's log-probs are the old policy (one update per batch, as R1-AQA); bf16 reference and bigger
# micro-batches: fewer, lighter weight streams (benchmarks/grpo_step_bench.py "wins")
FAST=()
[ "${WINS:-0}" = 1 ] && FAST=(algorithm.rollout_correction.bypass_mode=True actor_rollout_ref.rollout.calculate_log_probs=True
                              actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8
                              actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16
                              actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16
                              actor_rollout_ref.ref.fsdp_config.model_dtype=bf16)
exec ${PYTHON:-python3} -m verl.trainer.main_ppo +recipe="${RECIPE:-r1aqa_grpo}" \
  data.train_files="${TRAIN:-$DATA/avqa-train.parquet}" data.val_files="${VAL:-$DATA/mmau-test-mini-v1.parquet}" \
  actor_rollout_ref.model.path="${MODEL:-Qwen/Qwen2-Audio-7B-Instruct}" \
  trainer.n_gpus_per_node="$NGPU" "${PLACE[@]}" "${FAST[@]}" "$@"
