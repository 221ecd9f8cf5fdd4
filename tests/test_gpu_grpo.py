"""GRPO through the plugin on a real GPU (marked `gpu`: skipped without CUDA; run on the lent H200).

One module-scoped pair of runs of `main_ppo +recipe=r1aqa_grpo_tiny` (tiny model, synthetic sound questions):
the actor hearing the same audio as vLLM, and the actor hearing each clip time-reversed
(`R1AQA_DIAG_ACTOR_AUDIO=reverse`). Issue 3's acceptance: steps run, a checkpoint is saved, audio reaches both
sides, and the rollout-vs-actor log-prob gap with the right audio is at least 10x smaller than with the wrong one,
at step 1 and after weight updates.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from r1aqa_plugin.verl_log import step_metrics

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
GAP = "rollout_corr/log_ppl_abs_diff"


def _grpo(work: Path, name: str, model: Path, train: Path, val: Path, steps: int, env: dict) -> tuple[int, str]:
    from r1aqa_plugin.quickstart import train_command

    cmd = train_command(model, train, val, work / name, steps) + ["trainer.logger=[console]"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1200, env={**os.environ, **env})
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from r1aqa_plugin.cli import main as r1aqa
    from r1aqa_plugin.models.qwen2_audio.builder import build_checkpoint

    work = tmp_path_factory.mktemp("gpu-grpo")
    model = build_checkpoint(work / "tiny", "tiny", seed=0)
    for name, seed, size in (("train", 1, 128), ("val", 2, 32)):
        assert r1aqa(["data", "build", "synthetic-aqa", "--tasks", "sound", "--size", str(size), "--seed", str(seed),
                      "--no-progress", "--out", str(work / f"{name}.parquet")]) == 0
    args = (model, work / "train.parquet", work / "val.parquet")
    same = _grpo(work, "same-audio", *args, steps=4, env={})
    reversed_ = _grpo(work, "reversed-audio", *args, steps=4, env={"R1AQA_DIAG_ACTOR_AUDIO": "reverse"})
    return work, same, reversed_


def test_tiny_grpo_runs_four_steps_and_saves_a_checkpoint(runs):
    work, (rc, log), _ = runs
    assert rc == 0, log[-5000:]
    assert list(step_metrics(log)) == [1, 2, 3, 4]
    assert (work / "same-audio" / "checkpoints" / "global_step_4" / "actor").is_dir()


def test_audio_reaches_vllm_once_expanded_and_the_actor_for_every_sequence(runs):
    _, (_, log), _ = runs
    sent = [line for line in log.splitlines() if "vLLM request:" in line]
    assert sent and all("<|AUDIO|>) ->" in line for line in sent)
    assert any("actor audio features: input_features (1, 128, 3000)" in line for line in log.splitlines())


def test_rollout_and_actor_agree_only_when_they_hear_the_same_audio(runs):
    _, (rc_same, same), (rc_rev, rev) = runs
    assert rc_same == 0 and rc_rev == 0, rev[-5000:]
    same_steps, rev_steps = step_metrics(same), step_metrics(rev)
    for step in (1, 4):  # before any update, and after three weight syncs
        assert same_steps[step]["training/rollout_actor_probs_pearson_corr"] > 0.999
        assert 10 * same_steps[step][GAP] <= rev_steps[step][GAP], (step, same_steps[step][GAP], rev_steps[step][GAP])
