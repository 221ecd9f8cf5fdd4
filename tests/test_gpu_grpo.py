"""GRPO through the plugin on a real GPU (marked `gpu`: skipped without CUDA; run on the lent H200).

One module-scoped pair of runs of `main_ppo +recipe=r1aqa_grpo_tiny` (tiny model, synthetic sound questions):
the actor hearing the same audio as vLLM, and the actor hearing another sample's audio
(`R1AQA_DIAG_ACTOR_AUDIO=other`). Issue 3's acceptance: steps run, a checkpoint is saved, audio reaches both
sides, and the rollout-vs-actor log-prob gap with the right audio is at least 10x smaller than with the wrong one,
at step 1 and after weight updates.

The two runs go side by side when two GPUs are visible (one each), else one after the other (two vLLM servers
starting on one GPU trip vLLM's start-up memory check). `R1AQA_GPU_GRPO_MODEL` and
`R1AQA_GPU_GRPO_DATA=train.parquet,val.parquet` swap in another Qwen2-Audio and data. Not the learning proof's
format-warmed model: its log-probs ignore the audio (benchmarks/audio_dependence.py: 1.1x), so no wrong clip
can move them; on the random tiny model another sample's clip moves them ~100x the bf16 noise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1aqa_plugin.verl_log import step_metrics

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
GAP = "rollout_corr/log_ppl_abs_diff"


def _start(work: Path, name: str, model: Path, train: Path, val: Path, steps: int, env: dict):
    from r1aqa_plugin.quickstart import train_command

    cmd = train_command(model, train, val, work / name, steps) + ["trainer.logger=[console]"]
    log = open(work / f"{name}.log", "w")
    return subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}), log


def _finish(work: Path, name: str, started) -> tuple[int, str]:
    proc, log = started
    try:
        rc = proc.wait(timeout=1200)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = -9
    log.close()
    return rc, (work / f"{name}.log").read_text(errors="replace")


def _gpu_envs() -> tuple[dict, dict] | None:
    """One GPU per run when two are visible (CUDA_VISIBLE_DEVICES ids kept as given); None when only one is."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    return ({"CUDA_VISIBLE_DEVICES": ids[0]}, {"CUDA_VISIBLE_DEVICES": ids[1]}) if len(ids) > 1 else None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from r1aqa_plugin.cli import main as r1aqa
    from r1aqa_plugin.models.qwen2_audio.builder import build_checkpoint

    work = tmp_path_factory.mktemp("gpu-grpo")
    if os.environ.get("R1AQA_GPU_GRPO_MODEL"):
        model = Path(os.environ["R1AQA_GPU_GRPO_MODEL"])
        train, val = (Path(p) for p in os.environ["R1AQA_GPU_GRPO_DATA"].split(","))
    else:
        model = build_checkpoint(work / "tiny", "tiny", seed=0)
        train, val = work / "train.parquet", work / "val.parquet"
        for path, seed, size in ((train, 1, 128), (val, 2, 32)):
            assert r1aqa(["data", "build", "synthetic-aqa", "--tasks", "sound", "--size", str(size), "--seed",
                          str(seed), "--no-progress", "--out", str(path)]) == 0
    args = (model, train, val)
    envs = _gpu_envs()
    wrong = {"R1AQA_DIAG_ACTOR_AUDIO": os.environ.get("R1AQA_GPU_GRPO_WRONG_AUDIO", "other")}
    if envs is None:  # one GPU: one run after the other (vLLM's start-up memory profile fails beside another)
        same = _finish(work, "same-audio", _start(work, "same-audio", *args, steps=4, env={}))
        return work, same, _finish(work, "wrong-audio", _start(work, "wrong-audio", *args, steps=4, env=wrong))
    same = _start(work, "same-audio", *args, steps=4, env=envs[0])
    time.sleep(20)  # staggered: the two Ray clusters and vLLM servers pick their ports one after the other
    other = _start(work, "wrong-audio", *args, steps=4, env={**envs[1], **wrong})
    return work, _finish(work, "same-audio", same), _finish(work, "wrong-audio", other)


def test_tiny_grpo_runs_four_steps_and_saves_a_checkpoint(runs):
    work, (rc, log), _ = runs
    assert rc == 0, log[-5000:]
    assert list(step_metrics(log)) == [1, 2, 3, 4]
    assert (work / "same-audio" / "checkpoints" / "global_step_4" / "actor").is_dir()


def test_audio_reaches_vllm_once_expanded_and_the_actor_for_every_sequence(runs):
    _, (_, log), _ = runs
    sent = [line for line in log.splitlines() if "vLLM request:" in line]
    assert sent and all("<|AUDIO|>) ->" in line for line in sent)
    # the actor's features, cut by hook P 2 frames after the clip's valid frames
    shapes = re.findall(r"actor audio features: input_features \(1, 128, (\d+)\), (\d+) valid frames", log)
    assert shapes and all(int(frames) == min(3000, int(valid) + 2) for frames, valid in shapes)


def test_rollout_and_actor_agree_only_when_they_hear_the_same_audio(runs):
    _, (rc_same, same), (rc_rev, rev) = runs
    assert rc_same == 0 and rc_rev == 0, rev[-5000:]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"))
    import contrast_table

    work = runs[0]
    print(contrast_table.table(str(work / "same-audio.log"), str(work / "wrong-audio.log")))
    same_steps, rev_steps = step_metrics(same), step_metrics(rev)
    for step in (1, 4):  # before any update, and after three weight syncs
        assert same_steps[step]["training/rollout_actor_probs_pearson_corr"] > 0.999
        assert 10 * same_steps[step][GAP] <= rev_steps[step][GAP], (step, same_steps[step][GAP], rev_steps[step][GAP])
