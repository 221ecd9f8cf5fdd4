"""GRPO steps at R1-AQA's shape through ``main_ppo +recipe=r1aqa_grpo``, per override variant, with verl's timings.

    python benchmarks/grpo_step_bench.py run --model DIR --data FILE.parquet [--gpus 1] [--steps 3]
        [--variants baseline,wins] [--logs DIR] [--extra KEY=VALUE ...] [--dry-run]
    python benchmarks/grpo_step_bench.py table LOG [LOG ...] [--gpus 1] [--json out.json]
    python benchmarks/grpo_step_bench.py list

``run`` starts one ``python -m verl.trainer.main_ppo`` per variant (logs in ``--logs``), then prints the table;
``table`` prints it from existing console logs. Step 1 (vLLM and CUDA warm-up) is excluded from the means.
GPU-seconds per step = ``timing_s/step`` x GPUs; the floor is ``benchmarks/floor.py``'s step floor for the shape
read from the log (prompt/response lengths). Variants are override sets merged over the baseline (a later value
of the same key wins; Hydra itself rejects duplicate keys).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from r1aqa_plugin.verl_log import step_metrics

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import host_memory  # noqa: E402  (benchmarks/host_memory.py, beside this file)

# What the H200 image needs (docs/gpu-runs.md): no flash-attn there, transformers 5.17's config lacks the top-level
# tie_word_embeddings verl reads.
MACHINE = ["+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
           "+actor_rollout_ref.model.override_config.tie_word_embeddings=False",
           "actor_rollout_ref.model.use_remove_padding=False",
           "trainer.logger=[console]"]
RUN = ["trainer.val_before_train=False", "trainer.test_freq=-1", "trainer.save_freq=-1"]


def base_overrides(gpus: int) -> list[str]:
    """R1-AQA's shape (the recipe: 16 prompts x 8, 256 new tokens) as the 7B runs so far (grpo_runs.sh 7b)."""
    return [f"trainer.n_gpus_per_node={gpus}",
            f"actor_rollout_ref.actor.fsdp_config.optimizer_offload={gpus == 1}",
            "actor_rollout_ref.rollout.gpu_memory_utilization=0.4"]


# name -> (prediction, overrides). Predictions are for the 7B shape on H200s; docs/performance-plan.md says why.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("recipe + machine overrides; old log-prob recomputed, optimizer offloaded on 1 GPU", []),
    "bypass": ("timing_s/old_log_prob -> ~0 (saves one forward over 128 x 589 tokens: ~2-4 s)",
               ["algorithm.rollout_correction.bypass_mode=True",
                "actor_rollout_ref.rollout.calculate_log_probs=True"]),
    "micro": ("bigger micro-batches: update_actor and ref -5..-15%",
              ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
               "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16",
               "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16"]),
    "dynbsz": ("token-budget micro-batches (~16k tokens): like micro, no OOM risk from long prompts",
               ["actor_rollout_ref.actor.use_dynamic_bsz=True",
                "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=12288",
                "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=24576",
                "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=24576"]),
    "kvmem": ("gpu_memory_utilization 0.4 -> 0.5: all 128 sequences' KV (37.7 GiB) fit beside 15.6 GB of weights "
              "(0.4 leaves ~36 GiB); gen -0..-30%",
              ["actor_rollout_ref.rollout.gpu_memory_utilization=0.5"]),
    "refbf16": ("ref weights bf16 instead of fp32: -17 GB on every GPU, time ~0 (enables kvmem on 1 GPU)",
                ["actor_rollout_ref.ref.fsdp_config.model_dtype=bf16"]),
    "rmpad": ("remove-padding with sdpa (packed-sequence mask): ~0 at fixed lengths, possibly slower; check "
              "training/rollout_actor_probs_pearson_corr stays ~0.99998",
              ["actor_rollout_ref.model.use_remove_padding=True"]),
    "eager": ("control: vLLM without CUDA graphs (default already uses them): gen +30..100%",
              ["actor_rollout_ref.rollout.enforce_eager=True"]),
    "nodedup": ("control: audio encoder on every row again (hook I off): old log-prob, ref, update +10..25%",
                ["env:R1AQA_ENCODER_DEDUP=0"]),
    "nogroup": ("control: a prompt's samples not kept adjacent (hook J off): hook I finds ~1.3-2.7 copies per "
                "micro-batch instead of 8; ref and update +5..10%",
                ["env:R1AQA_GROUP_BY_PROMPT=0"]),
    "nomerge": ("control: transformers' audio merge (hook Y off): masked_scatter's backward waits for the GPU once "
                "a micro-batch (~85 ms at 8 rows on one H200, prof1's trace); update +0.5..+1.2 s on one GPU",
                ["env:R1AQA_SYNC_FREE_MERGE=0"]),
    "nocausal": ("control: verl's padding mask reaches sdpa (hook AA off), so the decoder's attention runs the masked "
                 "memory-efficient kernel over every query-key pair; update +0.6..+1.0 s, ref +0.1..+0.3 on one GPU",
                 ["env:R1AQA_CAUSAL_ATTENTION=0"]),
    "noshared": ("control: each row of a group runs its own forward pass over the group's prompt (hook AB off), as "
                 "verl does", ["env:R1AQA_SHARED_PROMPT=0"]),
    "refmicro": ("reference micro-batches of 32: verl streams the CPU-offloaded reference's weights once per "
                 "micro-batch, so 2 streams instead of 4 per rank; ref 5.1 -> ~2.5 s on 2 GPUs",
                 ["actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32"]),
    "refgpu": ("hook R: the reference keeps its bf16 weights on the GPU instead of streaming them from host memory "
               "per micro-batch (verl 0.9.1 always offloads it): ref 5.1 -> ~1.5-2.5 s on 2 GPUs, +7.8 GB a GPU",
               ["env:R1AQA_REF_ON_GPU=1"]),
    "cpuadam": ("1 GPU: FSDP2 with CPUOffloadPolicy, the optimizer step on the CPU (fp32 params + grads + Adam "
                "= 134 GB do not fit an H200); update slower (weights streamed per micro-batch) but it runs",
                ["actor_rollout_ref.actor.strategy=fsdp2", "actor_rollout_ref.actor.fsdp_config.offload_policy=True",
                 "actor_rollout_ref.actor.fsdp_config.optimizer_offload=False",
                 "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16"]),
    "nockpt": ("actor without gradient checkpointing: the update's recomputed forward goes (4 forward-equivalents "
               "of compute -> 3); update -1.5..-2.5 s on 2 GPUs, peak +20..30 GB a GPU (micro-batch of 8 x 589 tokens)",
               ["actor_rollout_ref.model.enable_gradient_checkpointing=False"]),
    "no_offload": ("2 GPUs: optimizer on GPU (already the 2-GPU baseline); 1 GPU: expect OOM",
                   ["actor_rollout_ref.actor.fsdp_config.optimizer_offload=False"]),
    "accgpu": ("gradients accumulated unsharded on the GPU over the micro-batches and reduced once (verl's engine "
               "default, which its Hydra config turns off): one gradient reduction (and, with the CPU offload, one "
               "copy to host memory and no additions there) a step instead of one a micro-batch; peak + the "
               "unsharded gradients (33.6 GB fp32 for the 7B)",
               ["actor_rollout_ref.actor.fsdp_config.use_no_sync_for_gradient_accumulation=True"]),
}
VARIANTS["wins"] = ("bypass + micro + refbf16 + kvmem + refmicro stacked (hooks I, J on as always)",
                    VARIANTS["bypass"][1] + VARIANTS["micro"][1] + VARIANTS["refbf16"][1] + VARIANTS["kvmem"][1]
                    + VARIANTS["refmicro"][1])
VARIANTS["wins1"] = ("1 GPU: wins + cpuadam (the step on the CPU; the only way the 7B fits one H200)",
                     VARIANTS["wins"][1] + VARIANTS["cpuadam"][1])
VARIANTS["wins1acc"] = (("1 GPU: wins1 + accgpu + update micro-batches of 32: per step the fp32 weights stream in "
                          "8 times instead of 16, the gradients go to host memory once instead of 8 times and are "
                          "never added there; update -20..-60% against wins1, peak 50-65 GB"),
                         VARIANTS["wins1"][1] + VARIANTS["accgpu"][1]
                         + ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32"])
VARIANTS["wins1v"] = (("1 GPU: wins with verl's optimizer offload and hook V (R1AQA_OPTIMIZER_STREAM=1): the AdamW "
                        "state stays in host memory and the step runs by 1 GB chunks of parameters, so the fp32 weights "
                        "and gradients (67 GB) stay on the GPU and the rest of the step is wins' on one GPU. Measured "
                        "(2026-11-30): 42.3 s with the copies in line and new host buffers each step; 26.8 s with them "
                        "overlapped and the host copies reused, 94.6 GB on the GPU, 166 GB of host memory in use"),
                       VARIANTS["wins"][1] + ["actor_rollout_ref.actor.fsdp_config.optimizer_offload=True",
                                              "env:R1AQA_OPTIMIZER_STREAM=1"])
VARIANTS["winsref"] = ("2 GPUs: wins + refgpu (the reference's weights stay on the GPU)",
                       VARIANTS["wins"][1] + VARIANTS["refgpu"][1])
VARIANTS["wins1ref"] = ("1 GPU: wins1 + refgpu", VARIANTS["wins1"][1] + VARIANTS["refgpu"][1])
VARIANTS["wins1vref"] = (("1 GPU: wins1v + refgpu: the bf16 reference keeps its weights on the GPU. Measured "
                          "(2026-11-30, beside wins1v): step 27.1 s against 26.8, step 1 106 s against 153, the same "
                          "GPU peak (94.6 GB), host memory in use 121 GB against 166; 25.5 s the next session "
                          "(prof1's steps 2-3); examples/train_h200.sh 1 with WINS=1 MICRO=8"),
                         VARIANTS["wins1v"][1] + VARIANTS["refgpu"][1])
VARIANTS["wins1fast"] = (("1 GPU: wins1vref + nockpt with update micro-batches of 4: the recomputed forward "
                          "skipped, its activations (~26 GB at 8 rows, 2 GPUs' winsfast) halved to fit beside the fp32 "
                          "weights and gradients; predicted update 12.5-14.5 s, step 22.5-24.5 s; measured "
                          "(2026-11-30) update 17.1 s, step 25.9 s, 98.4 GB: 32 launch-bound micro-batches cost what "
                          "the recompute saved"),
                         [*VARIANTS["wins1vref"][1], *VARIANTS["nockpt"][1],
                          "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4"])
VARIANTS["wins1big"] = (("1 GPU: wins1vref with update micro-batches of 16: prof1's trace (2026-11-30) has each "
                         "8-row micro-batch 1.04 s long on the host but 0.64 s busy on the GPU (~9,000 kernels, "
                         "median 26 us, idle mostly in gaps under 0.5 ms; trace_report.py): the loop is launch-bound, "
                         "so twice the rows a launch; update 16.5 -> 11-13.5 s, step 19.5-22 s. Measured "
                         "(2026-11-30): update 12.7 s, step 21.3 s, 94.6 GB allocated, 135.4 reserved; "
                         "examples/train_h200.sh 1 with WINS=1"),
                        [*VARIANTS["wins1vref"][1], "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16"])
VARIANTS["wins1liger"] = (("1 GPU: wins1big with model.use_liger=True (hook X: Liger's RMSNorm, SwiGLU and rotary "
                           "kernels on the Qwen2 decoder): prof1's update spent ~2.4 s of its 4.1 s of elementwise "
                           "kernels in what they fuse; update 12.7 -> 10.8-12.0 s, ref 3.4 -> 3.0-3.3 s, step "
                           "21.3 -> 19.0-20.5 s, peak <= 94.6 GB"),
                          [*VARIANTS["wins1big"][1], "actor_rollout_ref.model.use_liger=True"])
VARIANTS["wins1scatter"] = (("1 GPU: wins1liger with transformers' masked_scatter audio merge (hook Y off): the "
                             "control for hook Y, and the settings wins1liger ran with on 2026-12-01 (19.27 s)"),
                            [*VARIANTS["wins1liger"][1], *VARIANTS["nomerge"][1]])
VARIANTS["wins1enc"] = (("1 GPU: wins1liger with the audio encoder's activations kept (hook Z, "
                         "R1AQA_ENCODER_RECOMPUTE=0): its recompute is ~800 launches a micro-batch on one or two clips "
                         "in a launch-bound loop. Predicted: update -0.3..-0.7 s, GPU peak +2..+6 GB"),
                        [*VARIANTS["wins1liger"][1], "env:R1AQA_ENCODER_RECOMPUTE=0"])
VARIANTS["wins1keep8"] = (("1 GPU: wins1enc with the decoder's last 8 layers' activations kept too (hook Z, "
                           "R1AQA_DECODER_KEEP_LAYERS=8, ~1 GB a layer at 16 rows). Predicted against wins1liger: "
                           "update -0.7..-1.6 s, GPU peak +10..+16 GB; ~1 in 4 that it runs out of GPU memory (136 "
                           "of 139.8 GB were reserved at wins1liger)"),
                          [*VARIANTS["wins1enc"][1], "env:R1AQA_DECODER_KEEP_LAYERS=8"])
VARIANTS["winsfast"] = ("2 GPUs: winsref + nockpt (spends the ~50 GB a GPU that 2 GPUs leave free on skipping the "
                        "recomputed forward)", VARIANTS["winsref"][1] + VARIANTS["nockpt"][1])
VARIANTS["fsdp2fast"] = (("2 GPUs: winsfast on FSDP2: its state dict is the shards themselves, so the weight sync "
                          "gathers the fp32 weights once instead of twice (FSDP1 gathers them for the state dict, then "
                          "again per tensor): sync 1.65 -> 1.0-1.35 s; update within +-0.5 s, peak within +-5 GB"),
                         VARIANTS["winsfast"][1] + ["actor_rollout_ref.actor.strategy=fsdp2"])
VARIANTS["lora1"] = (("1 GPU: the LoRA recipe (r1aqa_grpo_lora: rank 32, encoder frozen, merged into vLLM) with "
                      "bypass, micro, kvmem, no checkpointing; the optimizer state is small, so it stays on the GPU. "
                      "Not R1-AQA's maths (full fine-tuning). First run (2026-11-30, verl's in-place merge): 51.8 s, "
                      "of which the sync 27.5 and the update 16.2. With hook T (out-of-place merge, twenty-first "
                      "session): 37.2 s, sync 1.45, update 26.9 beside another 7B start-up"),
                     ["+recipe=r1aqa_grpo_lora", *VARIANTS["bypass"][1], *VARIANTS["micro"][1], *VARIANTS["kvmem"][1],
                      "actor_rollout_ref.actor.fsdp_config.optimizer_offload=False", *VARIANTS["nockpt"][1]])
VARIANTS["lora1verl"] = ("lora1 with hook T off: verl's in-place merge and host-memory backup of the weights at "
                         "each sync (27.5 s on 2026-11-30), for the side-by-side ratio",
                         [*VARIANTS["lora1"][1], "env:R1AQA_LORA_SYNC_OUT_OF_PLACE=0"])
VARIANTS["lora1fsdp2"] = (("lora1 on FSDP2: verl's FSDP1 LoRA wrap makes every lora_A and lora_B Linear an FSDP unit "
                           "of its own (394 more units on the 7B), FSDP2 wraps layers only. A weak hypothesis for "
                           "lora1's slow update (16.2 s against 7-10 predicted): update 16.2 -> 10-16 s"),
                          [*VARIANTS["lora1"][1], "actor_rollout_ref.actor.strategy=fsdp2"])


def profile_overrides(step: int) -> list[str]:
    """verl's torch profiler on one step of the training worker's rank 0 (it marks the reference pass and the
    update); the traces go to LOGS/traces-VARIANT-NGPU, their summary (trace_report.py) to LOGS/trace-VARIANT-NGPU.md.
    The profiled step runs slower, so ``summarize`` leaves it out of the means."""
    return ["global_profiler.tool=torch", f"global_profiler.steps=[{step}]",
            "actor_rollout_ref.actor.profiler.enable=True", "actor_rollout_ref.actor.profiler.ranks=[0]"]


VARIANTS["prof"] = (("winsfast with step 2 profiled on rank 0 (torch profiler; the step itself runs slower): where "
                     "the update's 6.6 s and the reference's 2.1 s go, GPU-bound or waiting on the host"),
                    VARIANTS["winsfast"][1] + profile_overrides(2))
VARIANTS["prof1"] = (("1 GPU: wins1vref with step 4 profiled (run it with --steps 4): steps 2-3 are wins1vref's "
                      "control, step 4 says where one H200's 18 s update and 3 s reference go"),
                     VARIANTS["wins1vref"][1] + profile_overrides(4))
VARIANTS["prof1liger"] = (("1 GPU: wins1liger with step 4 profiled (run it with --steps 4): is the update "
                           "still launch-bound once Liger fuses the decoder's elementwise work and micro-batches are "
                           "16 rows? "
                           "With hook Y (the audio merge without a sync in backward) since it was written. Predicted: "
                           "steps 2-3 update 10.2-11.0 s, step 18.1-18.9 s; the profiled update 65-85% busy, "
                           "~13,000-16,000 kernels a micro-batch, no host wait over 20 ms inside a backward"),
                          VARIANTS["wins1liger"][1] + profile_overrides(4))
SMALL_HOST = ["actor_rollout_ref.rollout.agent.num_workers=2", "reward.num_workers=2"]
VARIANTS["wins1small"] = (("1 GPU on a 128 GiB host (nvidia-h200): wins1liger with 2 agent-loop and 2 reward workers "
                           "instead of 8 and 8 (~15 GB less host memory; prof1small's step 2: 20.26 s, update 11.19), "
                           "and hook AA (sdpa's causal kernel on verl's right-padded rows, on by default since "
                           "2026-12-01). Predicted against prof1small's step 2: update 11.2 -> 10.3-10.7 s, ref "
                           "3.26 -> 2.9-3.1, step 20.3 -> 19.0-19.6 s, peak <= 94.6 GB"),
                          [*VARIANTS["wins1liger"][1], *SMALL_HOST])
VARIANTS["wins1smallmask"] = (("wins1small with hook AA off (verl's mask reaches sdpa): the control for hook AA on "
                               "the same host"), [*VARIANTS["wins1small"][1], *VARIANTS["nocausal"][1]])
VARIANTS["wins1smallkeep8"] = (("wins1keep8 with 2 + 2 workers (wins1small with hook Z: the audio encoder's and the "
                                "decoder's last 8 layers' activations kept). Predicted against wins1small: update "
                                "-0.7..-1.6 s, GPU peak +10..+16 GB; ~1 in 4 that it runs out of GPU memory. Measured "
                                "(2026-12-01): update 11.18 -> 10.45 s, step 20.10 -> 18.65 s, peak 94.6 -> 104.3 GB; "
                                "examples/train_h200.sh 1 with WINS=1"),
                               [*VARIANTS["wins1keep8"][1], *SMALL_HOST])
VARIANTS["wins1smallkeep8mask"] = (("wins1smallkeep8 with hook AA off (verl's mask reaches sdpa): hook AA's control on "
                                    "one machine, run beside wins1smallkeep8 in the same queue. Predicted: update "
                                    "+0.3..+0.7 s against it (8 update micro-batches at ~65 ms and 4 reference "
                                    "micro-batches at ~30 ms, from causal_attention_bench.py)"),
                                   [*VARIANTS["wins1smallkeep8"][1], *VARIANTS["nocausal"][1]])
VARIANTS["wins1smallkeep12"] = (("wins1smallkeep8 with the decoder's last 12 layers kept (KEEP=12). Predicted against "
                                 "wins1smallkeep8 (from its -0.73 s and +9.7 GB for the encoder and 8 layers): update "
                                 "-0.2..-0.5 s, GPU peak +3..+6 GB (104.3 -> 107-110 GB); ~1 in 10 out of memory"),
                                [*VARIANTS["wins1smallkeep8"][1], "env:R1AQA_DECODER_KEEP_LAYERS=12"])
VARIANTS["wins1smallnoshared"] = (("wins1smallkeep8 with hook AB off: each row runs its own forward pass over its "
                                   "group's prompt, as before 2026-12-01's twenty-seventh session (wins1smallkeep8 "
                                   "measured so: 18.65 s a step, update 10.45, ref 2.39); the control for hook AB"),
                                  [*VARIANTS["wins1smallkeep8"][1], *VARIANTS["noshared"][1]])
VARIANTS["wins1smallshared"] = (("wins1smallkeep8 with hook AB (on by default since 2026-12-01): a micro-batch's 16 "
                                 "rows (2 groups) packed into one sequence holding each group's ~330-token prompt "
                                 "once, ~9,400 -> ~4,800 tokens. Predicted against wins1smallnoshared (written before "
                                 "the run): update 10.45 -> 7.5-9.0 s (half the GPU work, but 8 micro-batches' host "
                                 "launches stay), ref 2.39 -> 1.5-2.0 s, step 18.65 -> 15.5-17.0 s; GPU peak "
                                 "-10..-25 GB"), [*VARIANTS["wins1smallkeep8"][1]])
SHARED32 = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32",
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=64"]
VARIANTS["wins1smallshared32"] = (("wins1smallshared with update micro-batches of 32 rows (4 groups, ~9,500 packed "
                                   "tokens: the token count of 16 separate rows) and reference micro-batches of 64. "
                                   "Predicted against wins1smallnoshared: update 10.45 -> 6.5-8.0 s (half the "
                                   "micro-batches, each as long as before), ref 2.39 -> 1.3-1.8 s, step 18.65 -> "
                                   "14.5-16.5 s; GPU peak within +-8 GB of 104.3; ~1 in 5 out of memory. Measured "
                                   "(2026-12-01, steps 2-4): update 7.52 s, ref 1.62, step 15.26 s, peak 112.4 GB, "
                                   "against wins1smallnoshared's 10.93, 2.81 and 20.10 s on the same machine"),
                                  [*VARIANTS["wins1smallshared"][1], *SHARED32])
VARIANTS["wins1shared32"] = (("wins1keep8 with hook AB's update micro-batches of 32 and reference micro-batches of 64: "
                              "wins1smallshared32 with verl's default workers; examples/train_h200.sh 1 with WINS=1"),
                             [*VARIANTS["wins1keep8"][1], *SHARED32])
VARIANTS["prof1small"] = (("1 GPU on a 128 GiB host (nvidia-h200, too small for wins1liger's 121-127 GB in use): "
                           "wins1liger with 2 agent-loop and 2 reward workers instead of 8 and 8 (~15 GB less host "
                           "memory), step 3 profiled (run it with --steps 3). Predicted: step 2 gen 4.4-5.5 s, ref "
                           "2.5-3.0, update 10.2-11.5 (hook Y on), host peak 105-118 GB; the profiled update 65-85% "
                           "busy, no wait over 20 ms in MaskedScatterBackward (there is none: hook Y)"),
                          [*VARIANTS["wins1liger"][1], *SMALL_HOST, *profile_overrides(3)])
PROFILED_STEPS = re.compile(r"^global_profiler\.steps=\[([\d,\s]*)\]$")


def profiled_steps(overrides: list[str]) -> set[int]:
    """The steps a run's overrides put under the profiler (none unless ``global_profiler.tool`` is set)."""
    if not any(o.lstrip("+") in {"global_profiler.tool=torch", "global_profiler.tool=nsys"} for o in overrides):
        return set()
    for o in overrides:
        if m := PROFILED_STEPS.match(o.lstrip("+")):
            return {int(x) for x in m.group(1).split(",") if x.strip()}
    return set()


ENV_PREFIX = "env:"  # an override entry "env:KEY=VALUE" sets an environment variable of the run instead


def merge_overrides(*groups: list[str]) -> list[str]:
    """Hydra overrides with later values winning per key (``+key`` and ``key`` are the same key)."""
    merged: dict[str, tuple[str, str]] = {}
    for group in groups:
        for item in group:
            key, _, value = item.partition("=")
            bare = key.lstrip("+")
            prefix = merged[bare][0] if bare in merged else key[: len(key) - len(bare)]
            merged[bare] = (prefix, value)
    return [f"{prefix}{key}={value}" for key, (prefix, value) in merged.items()]


# ------------------------------------------------------------------------------------------------- parsing
def parse_metrics(log: str) -> list[dict[str, Any]]:
    """verl's console metrics, one record per step (with its ``step``), in order."""
    return [{"step": step, **metrics} for step, metrics in step_metrics(log).items()]


TIMING_KEYS = ("timing_s/gen", "timing_s/old_log_prob", "timing_s/ref", "timing_s/update_actor",
               "timing_s/update_weights", "timing_s/step")


def summarize(steps: list[dict[str, Any]], gpus: int, skip_first: bool = True,
              profiled: set[int] | frozenset[int] = frozenset()) -> dict[str, Any]:
    """Means over the measured steps (step 1 excluded unless it is all there is; profiled steps always excluded)."""
    steps = [s for s in steps if s["step"] not in profiled]
    use = [s for s in steps if s["step"] > 1] if skip_first else list(steps)
    if not use:
        use = list(steps)
    if not use:
        return {"steps": 0}

    def mean(key: str) -> float | None:
        vals = [s[key] for s in use if isinstance(s.get(key), float)]
        return sum(vals) / len(vals) if vals else None

    out: dict[str, Any] = {"steps": len(use), "gpus": gpus}
    for key in TIMING_KEYS:
        out[key] = mean(key)
    peaks = [s["actor/perf/max_memory_allocated_gb"] for s in use
             if isinstance(s.get("actor/perf/max_memory_allocated_gb"), float)]
    out["peak_gb"] = max(peaks) if peaks else None
    for key in ("perf/throughput", "prompt_length/mean", "response_length/mean",
                "training/rollout_actor_probs_pearson_corr", "rollout_corr/log_ppl_abs_diff"):
        out[key] = mean(key)
    step = out["timing_s/step"]
    out["gpu_s"] = step * gpus if step is not None else None
    return out


def floor_for(summary: dict[str, Any], size: str = "7b", prompts: int = 16, n: int = 8,
              clip_seconds: float = 10.0) -> float:
    import floor

    plen = summary.get("prompt_length/mean") or 333
    rlen = summary.get("response_length/mean") or 256
    text = max(int(round(plen)) - floor.audio_tokens(clip_seconds), 0)
    shape = floor.Shape(prompts=prompts, n=n, response=int(math.ceil(rlen)), clip_seconds=clip_seconds,
                        text_tokens=text)
    return floor.step_floor_seconds(floor.grpo_floor(size, shape))


def table(rows: list[tuple[str, dict[str, Any]]], size: str = "7b") -> str:
    from floor import R1AQA_GPU_SECONDS

    def f(x: Any, fmt: str = "6.2f") -> str:
        return format(x, fmt) if isinstance(x, float) else "-"

    head = ("| variant | GPUs | steps | gen s | old lp s | ref s | update s | sync s | step s | GPU-s/step | "
            "x floor | R1-AQA / this | peak GB | tok/s | Pearson |")
    lines = [head, "|" + "|".join(["---"] + ["---:"] * (head.count("|") - 2)) + "|"]
    for name, s in rows:
        if not s.get("steps"):
            lines.append(f"| {name} | - | 0 | (no metrics: failed?) |")
            continue
        fl = floor_for(s, size)
        gs = s["gpu_s"]
        lines.append(
            f"| {name} | {s['gpus']} | {s['steps']} | {f(s['timing_s/gen'])} | {f(s['timing_s/old_log_prob'])} | "
            f"{f(s['timing_s/ref'])} | {f(s['timing_s/update_actor'])} | {f(s['timing_s/update_weights'])} | "
            f"{f(s['timing_s/step'])} | {f(gs, '.1f')} | {f(gs / fl if gs else None)} | "
            f"{f(R1AQA_GPU_SECONDS / gs if gs else None, '.1f')} | {f(s['peak_gb'], '.1f')} | "
            f"{f(s['perf/throughput'], '.0f')} | {f(s['training/rollout_actor_probs_pearson_corr'], '.5f')} |")
    lines.append(f"(floor = benchmarks/floor.py step floor for the logged lengths; goal <= 16 GPU-s per step; "
                 f"R1-AQA ~{R1AQA_GPU_SECONDS:.0f} GPU-s)")
    return "\n".join(lines)


GPUS_SUFFIX = re.compile(r"-(\d+)gpu$")  # a log's stem names its GPU count: grpo-wins-2gpu


def variant_of(name: str) -> str:
    """A row's variant: ``grpo-wins-2gpu`` (a log's stem) and ``wins`` (a run's row) are both ``wins``."""
    return GPUS_SUFFIX.sub("", re.sub(r"^grpo-", "", name))


# The 1-GPU forms of a multi-GPU variant: the 7B fits one H200 only with AdamW's state in host memory (hook V streams
# it through the step) or with the optimizer step on the CPU (FSDP2's offload policy)
ONE_GPU_FORM = {"wins1v": "wins", "wins1": "wins", "wins1vref": "winsref", "wins1ref": "winsref",
                "wins1fast": "winsfast", "wins1big": "winsref", "wins1liger": "winsref"}


def scaling(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Strong scaling of each variant measured at several GPU counts (R1-AQA's batch is fixed), its 1-GPU form
    included (the fastest, where several ran): step time, GPU-seconds, speed-up and efficiency against the fewest
    GPUs; empty if there is none."""
    groups: dict[str, dict[int, tuple[str, float]]] = {}
    for name, s in rows:
        if s.get("steps") and isinstance(s.get("timing_s/step"), float):
            variant = variant_of(name)
            counts = groups.setdefault(ONE_GPU_FORM.get(variant, variant), {})
            if s["gpus"] not in counts or s["timing_s/step"] < counts[s["gpus"]][1]:
                counts[s["gpus"]] = (variant, s["timing_s/step"])
    lines = []
    for group, counts in groups.items():
        if len(counts) < 2:
            continue
        base_gpus = min(counts)
        base = counts[base_gpus][1]
        for gpus in sorted(counts):
            variant, step = counts[gpus]
            speedup = base / step
            lines.append(f"| {group} | {variant} | {gpus} | {step:.2f} | {step * gpus:.1f} | {speedup:.2f} | "
                         f"{speedup * base_gpus / gpus:.2f} |")
    if not lines:
        return ""
    return "\n".join(["| variant | as run | GPUs | step s | GPU-s/step | speed-up | efficiency |",
                      "|---|---|---:|---:|---:|---:|---:|", *lines,
                      "(against the fewest GPUs of the variant, same batch; on 1 GPU the 7B runs the variant's "
                      "fastest 1-GPU form: AdamW's state streamed from host memory, or the step on the CPU)"])


# ------------------------------------------------------------------------------------------------ running
def traces_dir(variant: str, a: argparse.Namespace) -> Path:
    """Where a variant's profiler traces go (only variants with ``global_profiler.tool`` write any)."""
    return Path(a.logs).resolve() / f"traces-{variant}-{a.gpus}gpu"


def report_traces(variant: str, a: argparse.Namespace) -> Path | None:
    """Summarise a run's profiler traces into LOGS/trace-VARIANT-NGPU.md (the traces are too big to bring back)."""
    traces = sorted(traces_dir(variant, a).glob("*.json*"))
    if not traces:
        return None
    import trace_report

    out = Path(a.logs) / f"trace-{variant}-{a.gpus}gpu.md"
    out.write_text("".join(trace_report.report(t) + "\n" for t in traces))
    return out


def command(variant: str, a: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The ``main_ppo`` command line of a variant and its environment variables (``env:`` entries; Ray hands the
    driver's environment to every worker)."""
    overrides = merge_overrides(
        ["+recipe=r1aqa_grpo", f"data.train_files={a.data}", f"data.val_files={a.data}",
         f"actor_rollout_ref.model.path={a.model}", f"trainer.total_training_steps={a.steps}",
         f"trainer.default_local_dir={a.logs}/ckpt-{variant}",
         f"global_profiler.save_path={traces_dir(variant, a)}"],
        RUN, MACHINE, base_overrides(a.gpus), VARIANTS[variant][1], a.extra or [])
    env = dict(o[len(ENV_PREFIX):].split("=", 1) for o in overrides if o.startswith(ENV_PREFIX))
    return [sys.executable, "-m", "verl.trainer.main_ppo",
            *[o for o in overrides if not o.startswith(ENV_PREFIX)]], env


def run(a: argparse.Namespace) -> int:
    logs = Path(a.logs)
    logs.mkdir(parents=True, exist_ok=True)
    rows, rc_all = [], 0
    for variant in [v.strip() for v in a.variants.split(",") if v.strip()]:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant}; `list` shows them")
        cmd, env = command(variant, a)
        log = logs / f"grpo-{variant}-{a.gpus}gpu.log"
        shown = " ".join([f"{k}={v}" for k, v in env.items()] + cmd)
        print(f"== {variant} ({VARIANTS[variant][0]})\n   {shown}", flush=True)
        if a.dry_run:
            continue
        t = time.perf_counter()
        sampler = host_memory.Sampler(a.host_interval).start()  # the host's memory, per kind of process
        with open(log, "w") as fh:
            try:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=a.cwd or None,
                                    timeout=a.timeout, env={**os.environ, **env}).returncode
            except subprocess.TimeoutExpired:
                rc = 124
        hostmem = logs / f"grpo-{variant}-{a.gpus}gpu.hostmem.md"
        hostmem.write_text(sampler.stop().table() + "\n")
        print(f"   host memory: {sampler.start_used:.1f} GB in use at the start, peak {sampler.peak_used:.1f} GB; "
              f"processes held up to {sampler.peak_held:.1f} GB, per process kind in {hostmem}", flush=True)
        summary = report_traces(variant, a)
        if summary:
            print(f"   profiler traces: {summary}", flush=True)
        s = summarize(parse_metrics(log.read_text(errors="replace")), a.gpus, profiled=profiled_steps(cmd))
        s.update({"variant": variant, "rc": rc, "wall_s": time.perf_counter() - t, "log": str(log),
                  "host_start_gb": sampler.start_used, "host_peak_gb": sampler.peak_used,
                  "processes_peak_gb": sampler.peak_held, "processes_gb_at_peak": sampler.at_peak,
                  "overrides": cmd[3:], "env": env})
        rows.append((variant, s))
        print(f"   exit {rc}, {s['steps']} measured steps, wall {s['wall_s']:.0f} s", flush=True)
        if rc != 0:
            rc_all = rc
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), flush=True)
    if rows:
        print(f"\nGRPO step, {a.gpus} GPU(s), {time.strftime('%Y-%m-%d %H:%M')}\n")
        print(table(rows))
        if a.json:
            Path(a.json).write_text(json.dumps({k: v for k, v in rows}, indent=1, default=str))
    return rc_all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--gpus", type=int, default=1)
    r.add_argument("--steps", type=int, default=3, help="total steps; step 1 is warm-up and excluded")
    r.add_argument("--variants", default="baseline")
    r.add_argument("--logs", default=os.environ.get("OUT", "gpu-logs"))
    r.add_argument("--cwd", default=None)
    r.add_argument("--extra", nargs="*", help="more overrides, applied last")
    r.add_argument("--timeout", type=int, default=3600)
    r.add_argument("--json")
    r.add_argument("--dry-run", action="store_true")
    r.add_argument("--host-interval", type=float, default=2.0, help="seconds between host-memory samples")
    t = sub.add_parser("table")
    t.add_argument("logs", nargs="+")
    t.add_argument("--gpus", type=int, default=1, help="GPUs of every log (or name logs *-<N>gpu.log)")
    t.add_argument("--json")
    sub.add_parser("list")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for name, (pred, ov) in VARIANTS.items():
            print(f"{name:<11} {pred}\n{'':<11} {' '.join(ov) or '(no overrides)'}")
        return 0
    if a.cmd == "table":
        rows = []
        for path in a.logs:
            m = GPUS_SUFFIX.search(Path(path).stem)
            gpus = int(m.group(1)) if m else a.gpus
            known = VARIANTS.get(variant_of(Path(path).stem))
            rows.append((Path(path).stem, summarize(parse_metrics(Path(path).read_text(errors="replace")), gpus,
                                                    profiled=profiled_steps(known[1]) if known else set())))
        print(table(rows))
        if scaled := scaling(rows):
            print(f"\nScaling\n\n{scaled}")
        if a.json:
            Path(a.json).write_text(json.dumps(dict(rows), indent=1, default=str))
        return 0
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
