#!/usr/bin/env bash
# The smallest real GRPO run, on one GPU in a few minutes: a tiny random Qwen2-Audio, 256 synthetic audio questions,
# 5 steps of recipe r1aqa_grpo_tiny (same adapter, dataset, reward and vLLM rollout as the full recipe). It checks
# the plumbing, not learning: a random model's reward stays near 0.
# Without flash-attn (verl's packed path needs its varlen kernels): NO_FLASH_ATTN=1 (sdpa, no remove-padding).
#
#   bash examples/quickstart_gpu.sh [extra Hydra overrides]
#   NO_FLASH_ATTN=1 bash examples/quickstart_gpu.sh
set -euo pipefail
WORK=${WORK:-r1aqa-quickstart}; mkdir -p "$WORK"
R1AQA=${R1AQA:-r1aqa}
[ -e "$WORK/tiny-qwen2-audio/config.json" ] || $R1AQA make-model --size tiny --out "$WORK/tiny-qwen2-audio"
[ -e "$WORK/syn.parquet" ] || $R1AQA data build synthetic-aqa --size 256 --out "$WORK/syn.parquet"
EXTRA=()
if [ "${NO_FLASH_ATTN:-0}" = 1 ]; then
  EXTRA=(+actor_rollout_ref.model.override_config.attn_implementation=sdpa
         actor_rollout_ref.model.use_remove_padding=False)
fi
exec ${PYTHON:-python3} -m verl.trainer.main_ppo +recipe=r1aqa_grpo_tiny \
  data.train_files="$WORK/syn.parquet" data.val_files="$WORK/syn.parquet" \
  actor_rollout_ref.model.path="$WORK/tiny-qwen2-audio" trainer.default_local_dir="$WORK/checkpoints" \
  ${EXTRA[@]+"${EXTRA[@]}"} "$@"
