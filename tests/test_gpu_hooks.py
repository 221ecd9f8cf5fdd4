"""Hooks P and R on a CUDA GPU: what the CPU tests cannot show (bf16 kernels, FSDP's real wrapping). Skipped
without CUDA; run on the lent H200 with ``python -m pytest -m gpu tests/test_gpu_hooks.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from r1aqa_plugin.models.qwen2_audio import verl_hooks

pytestmark = pytest.mark.gpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_cut_features_give_the_same_bf16_logits_on_the_gpu():
    """Hook P's exactness with the GPU's bf16 kernels (sdpa, cuDNN convolutions), clips of 2-10 s."""
    from feature_transfer_bench import model_check

    check = model_check("tiny", "cuda")
    assert check["dtype"] == "bfloat16" and check["cut_frames"] == 1002
    assert check["equal"], f"max |diff| {check['max_abs_diff']}"


@pytest.mark.parametrize("on_gpu", [False, True])
def test_reference_weights_stay_on_the_gpu_only_when_asked(bare_fsdp_engine, monkeypatch, on_gpu):
    """Hook R with FSDP1's real wrapping: verl's reference engine offloads its weights to the CPU unless asked."""
    import torch
    from verl.workers.config import FSDPEngineConfig

    verl_hooks.install()
    if on_gpu:
        monkeypatch.setenv(verl_hooks.REF_ON_GPU_ENV, "1")
    else:
        monkeypatch.delenv(verl_hooks.REF_ON_GPU_ENV, raising=False)
    torch.cuda.set_device(0)
    engine = bare_fsdp_engine("cuda")
    engine.engine_config = FSDPEngineConfig(strategy="fsdp", forward_only=True)
    module = engine._build_fsdp_module(engine._build_module())
    assert bool(module.cpu_offload.offload_params) is not on_gpu
    assert {p.device.type for p in module.parameters()} == ({"cuda"} if on_gpu else {"cpu"})
