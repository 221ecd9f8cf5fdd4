"""`r1aqa quickstart`: the smallest real run, fully offline.

Builds the tiny random Qwen2-Audio and a synthetic-aqa set, then:
- with a CUDA GPU and vLLM: trains it with GRPO through verl (``+recipe=r1aqa_grpo_tiny``, 5 steps, a checkpoint);
- without: says why training is skipped (verl 0.9.1 rolls out only through a vLLM GPU server) and runs what a
  CPU can: the adapter check (``r1aqa doctor``) and ``r1aqa eval`` of the tiny model on the synthetic set
  (generation with transformers, official MMAU scoring, report and chart).
A random model answers at chance or below; the point is the whole path, not the score.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path


def machine_overrides() -> list[str]:
    """main_ppo overrides this machine needs: no flash-attn, or transformers newer than verl 0.9.1's pin."""
    overrides = []
    if importlib.util.find_spec("flash_attn") is None:  # verl's defaults assume flash-attn's varlen kernels
        overrides += ["+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
                      "actor_rollout_ref.model.use_remove_padding=False"]
    from packaging.version import Version

    if Version(importlib.metadata.version("transformers")) >= Version("5.11"):
        # newer Qwen2AudioConfig keeps tie_word_embeddings only in text_config; verl reads it at the top level
        overrides.append("+actor_rollout_ref.model.override_config.tie_word_embeddings=False")
    return overrides


def train_command(model: Path, train: Path, val: Path, out: Path, steps: int) -> list[str]:
    """The main_ppo command line the GPU branch runs (printed too, so users can rerun or edit it)."""
    return [sys.executable, "-m", "verl.trainer.main_ppo", "+recipe=r1aqa_grpo_tiny",
            f"data.train_files={train}", f"data.val_files={val}", f"actor_rollout_ref.model.path={model}",
            f"trainer.total_training_steps={steps}", f"trainer.save_freq={steps}",
            f"trainer.default_local_dir={out / 'checkpoints'}", *machine_overrides()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `r1aqa quickstart`."""
    parser.add_argument("--out", default="r1aqa-quickstart", help="working folder (default: ./r1aqa-quickstart)")
    parser.add_argument("--size", type=int, default=64, help="synthetic questions to build (default 64)")
    parser.add_argument("--steps", type=int, default=5, help="GRPO steps on a GPU (default 5)")
    parser.add_argument("--cpu", action="store_true", help="take the CPU branch even when a GPU is present")


def run(args: argparse.Namespace) -> int:
    """Build the assets, then train (GPU) or check and evaluate (CPU)."""
    from r1aqa_plugin.cli import main as r1aqa
    from r1aqa_plugin.eval.backends import cuda_available, vllm_importable
    from r1aqa_plugin.models.qwen2_audio.builder import build_checkpoint

    out = Path(args.out).resolve()
    model, train, val = out / "tiny-qwen2-audio", out / "synthetic-train.parquet", out / "synthetic-val.parquet"
    if not (model / "model.safetensors").exists():
        print(f"[1/3] building the tiny Qwen2-Audio in {model}")
        build_checkpoint(model, "tiny", seed=0)
    for path, seed, split, size in ((train, 0, "train", args.size), (val, 1, "val", max(16, args.size // 4))):
        if not path.exists():
            print(f"[2/3] building synthetic-aqa ({split}, {size} questions) in {path}")
            rc = r1aqa(["data", "build", "synthetic-aqa", "--size", str(size), "--seed", str(seed),
                        "--split", split, "--no-progress", "--out", str(path)])
            if rc:
                return rc
    if cuda_available() and vllm_importable() and not args.cpu:
        cmd = train_command(model, train, val, out, args.steps)
        print("[3/3] GRPO through verl + vLLM:\n  " + " ".join(cmd), flush=True)
        return subprocess.call(cmd, cwd=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    reason = ("--cpu was given" if args.cpu else
              "no CUDA GPU here" if not cuda_available() else "vLLM is not installed (pip install 'r1aqa-plugin[gpu]')")
    print(f"[3/3] skipped GRPO training: {reason}; verl 0.9.1 rolls out only through a vLLM GPU server.\n"
          "      On a GPU machine this step runs:\n  "
          + " ".join(train_command(model, train, val, out, args.steps))
          + "\n      Running what this machine can instead: the adapter check, then eval of the tiny model.",
          flush=True)
    doctor_rc = r1aqa(["doctor"])
    eval_rc = r1aqa(["eval", "--model", str(model), "--data", str(val), "--backend", "hf", "--out",
                     str(out / "eval"), "--max-new-tokens", "16"])
    print(f"quickstart done (CPU branch): doctor exit {doctor_rc}, eval exit {eval_rc}; results in {out / 'eval'}")
    return eval_rc or doctor_rc
