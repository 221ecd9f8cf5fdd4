#!/usr/bin/env bash
# The same recipe on 1 or 2 H200 (141 GB): same batch (16 prompts x 8) and maths, only placement changes. 2 GPUs
# (measured before hook AB, docs/benchmarks.md: 7B, random weights): FSDP shards fp32 weights, grads and AdamW over
# both; as is 42.5 s a step; WINS=1 16.6 s, 80.7 GB a GPU; WINS=fast 13.7 s, 114.7 GB (the reference stays on the GPU,
# no gradient checkpointing). 1 GPU: hook V keeps AdamW's state in host memory, streamed through the step. WINS=1 (+
# the bf16 reference resident, update micro-batches of 32 = 4 groups, each prompt packed once by hook AB (MICRO=16 if
# long prompts do not fit), Liger's kernels if the [liger] extra is installed (LIGER=auto|1|0), the encoder's and the
# decoder's last KEEP=8 layers' activations kept (hook Z; KEEP=0 recomputes all)): 15.3 s a step, 112.4 GB on the GPU.
#   bash examples/train_h200.sh NGPU [overrides]   # WINS=1|fast: grpo_step_bench's wins|winsfast|wins1shared32 (test)
set -euo pipefail
NGPU=${1:?usage: train_h200.sh NGPU(1|2) [overrides]}; shift
case $NGPU in 1|2) ;; *) echo "train_h200.sh: NGPU must be 1 or 2 (8 GPUs: examples/train_8x80gb.sh)" >&2; exit 2 ;; esac
DATA=${DATA:-data}; PLACE=(); MICRO=${MICRO:-$((NGPU == 1 ? 32 : 8))}  # WINS's update micro-batch, rows a GPU
[ "$NGPU" = 1 ] && PLACE=(actor_rollout_ref.actor.fsdp_config.optimizer_offload=True) && export R1AQA_OPTIMIZER_STREAM=1
# WINS: the rollout's log-probs are the old policy (bypass: one update a batch, as R1-AQA), bf16 reference, bigger
FAST=(); case ${WINS:-0} in 0) ;;  # micro-batches; all 128 sequences' KV cache in vLLM at once
  1|fast) FAST=(algorithm.rollout_correction.bypass_mode=True actor_rollout_ref.rollout.calculate_log_probs=True
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=$MICRO
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=$((MICRO > 16 ? 2 * MICRO : 32))
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 actor_rollout_ref.ref.fsdp_config.model_dtype=bf16
    actor_rollout_ref.rollout.gpu_memory_utilization=0.5) ;;
  *) echo "train_h200.sh: WINS must be 0, 1 or fast, not '$WINS'" >&2; exit 2 ;;
esac
case ${LIGER:-auto} in 0|1|auto) ;; *) echo "train_h200.sh: LIGER must be 0, 1 or auto, not '$LIGER'" >&2; exit 2 ;; esac
[[ ${KEEP:=8} =~ ^[0-9]+$ ]] || { echo "train_h200.sh: KEEP must be a number of layers, not '$KEEP'" >&2; exit 2; }
if [ "$NGPU" = 1 ] && [ "${WINS:-0}" = 1 ]; then export R1AQA_REF_ON_GPU=1
  [ "$KEEP" = 0 ] || export R1AQA_ENCODER_RECOMPUTE=0 R1AQA_DECODER_KEEP_LAYERS=$KEEP  # hook Z
  [ "${LIGER:-auto}" = 0 ] || if ${PYTHON:-python3} -c "import liger_kernel" 2> /dev/null; then  # hook X
    FAST+=(actor_rollout_ref.model.use_liger=True)
  else echo "train_h200.sh: liger-kernel is not installed (pip install 'r1aqa-plugin[liger]'): ~2 s a step slower" >&2
    [ "${LIGER:-auto}" != 1 ] || exit 2; fi
fi
if [ "${WINS:-0}" = fast ]; then
  [ "$NGPU" = 2 ] || { echo "train_h200.sh: WINS=fast needs 2 GPUs (114.7 GB a GPU measured on 2); use WINS=1" >&2; exit 2; }
  FAST+=(actor_rollout_ref.model.enable_gradient_checkpointing=False); export R1AQA_REF_ON_GPU=1
fi
exec ${PYTHON:-python3} -m verl.trainer.main_ppo +recipe="${RECIPE:-r1aqa_grpo}" \
  data.train_files="${TRAIN:-$DATA/avqa-train.parquet}" data.val_files="${VAL:-$DATA/mmau-test-mini-v1.parquet}" \
  actor_rollout_ref.model.path="${MODEL:-Qwen/Qwen2-Audio-7B-Instruct}" \
  trainer.n_gpus_per_node="$NGPU" "${FAST[@]}" "${PLACE[@]}" "$@"
