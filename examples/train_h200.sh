#!/usr/bin/env bash
# The same recipe on 1 or 2 H200 (141 GB). Same batch (16 prompts x 8) and maths: only placement changes.
# 7B in fp32 master weights + grads + AdamW = ~134 GB before activations, so the AdamW state (~67 GB) lives in
# CPU memory (host RAM >= 128 GB; 1 GPU: ~70 GB of it) and the reference model's weights are offloaded between
# uses. Memory figures are estimates, not measured; if vLLM runs out of KV cache, lower
# actor_rollout_ref.rollout.gpu_memory_utilization (0.5). Expect ~8x (1 GPU) / ~4x (2 GPUs) R1-AQA's 4-5 h.
#
#   bash examples/train_h200.sh NGPU [extra Hydra overrides]        # NGPU: 1 or 2
#   bash examples/train_h200.sh 2 trainer.total_training_steps=500
# Env: as examples/train_8x80gb.sh.
set -euo pipefail
NGPU=${1:?usage: train_h200.sh NGPU(1|2) [overrides]}; shift
case $NGPU in 1|2) ;; *) echo "train_h200.sh: NGPU must be 1 or 2 (8 GPUs: examples/train_8x80gb.sh)" >&2; exit 2 ;; esac
DATA=${DATA:-data}
exec ${PYTHON:-python3} -m verl.trainer.main_ppo +recipe="${RECIPE:-r1aqa_grpo}" \
  data.train_files="${TRAIN:-$DATA/avqa-train.parquet}" data.val_files="${VAL:-$DATA/mmau-test-mini-v1.parquet}" \
  actor_rollout_ref.model.path="${MODEL:-Qwen/Qwen2-Audio-7B-Instruct}" \
  trainer.n_gpus_per_node="$NGPU" \
  actor_rollout_ref.actor.fsdp_config.optimizer_offload=True \
  actor_rollout_ref.ref.fsdp_config.param_offload=True "$@"
