#!/usr/bin/env bash
# R1-AQA on its own hardware: one node, 8 GPUs of 80 GB (H800/H100/A100-80G). 16 prompts x 8 completions a step,
# 1000 steps; R1-AQA took 4-5 h per 1000 steps. Checkpoints and the `best` link (highest MMAU test-mini accuracy)
# land in checkpoints/r1aqa/<experiment>/.
#
#   bash examples/train_8x80gb.sh [extra Hydra overrides]
#   RECIPE=r1aqa_grpo_think bash examples/train_8x80gb.sh trainer.logger='[console,wandb]'
# Env: RECIPE (r1aqa_grpo), MODEL (Qwen/Qwen2-Audio-7B-Instruct), TRAIN / VAL (data/avqa-train.parquet,
# data/mmau-test-mini-v1.parquet), PYTHON (python3).
set -euo pipefail
DATA=${DATA:-data}
exec ${PYTHON:-python3} -m verl.trainer.main_ppo +recipe="${RECIPE:-r1aqa_grpo}" \
  data.train_files="${TRAIN:-$DATA/avqa-train.parquet}" data.val_files="${VAL:-$DATA/mmau-test-mini-v1.parquet}" \
  actor_rollout_ref.model.path="${MODEL:-Qwen/Qwen2-Audio-7B-Instruct}" \
  trainer.n_gpus_per_node=8 "$@"
