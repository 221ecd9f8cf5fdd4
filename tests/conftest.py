"""Shared fixtures: the offline tiny Qwen2-Audio, real audio clips, and the test tiers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MMAU_DIR = SHARED / "data" / "mmau"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests on machines without CUDA (CI never has one)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2-Audio checkpoint built offline (original key names, real Qwen2 tokenizer)."""
    from r1aqa_plugin.models.qwen2_audio.builder import build_checkpoint

    cache = os.environ.get("R1AQA_TEST_MODEL_DIR")
    out = Path(cache) if cache else tmp_path_factory.mktemp("tiny-qwen2-audio")
    if not (out / "model.safetensors").exists():
        build_checkpoint(out, size="tiny", seed=0)
    return out


@pytest.fixture(scope="session")
def mmau_dir() -> Path:
    """../shared/data/mmau (never committed); tests using it skip when it is absent."""
    if not (MMAU_DIR / "mmau-test-mini.json").exists():
        pytest.skip("../shared/data/mmau is not present")
    return MMAU_DIR


@pytest.fixture(scope="session")
def fsdp_engine_support():
    """tests/support/cpu_fsdp_engine.py: verl's FSDPEngine steered to CPU ranks, and its build, sync and forward
    check (which also run on one CUDA rank)."""
    import sys

    support = str(REPO / "tests" / "support")
    sys.path.insert(0, support)
    try:
        import cpu_fsdp_engine
    finally:
        sys.path.remove(support)
    return cpu_fsdp_engine


@pytest.fixture
def bare_fsdp_engine(tiny_model_dir: Path, tmp_path: Path):
    """A factory of verl's FSDPEngine holding only what ``_build_module`` and ``_build_fsdp_module`` read, on the
    tiny checkpoint, inside a one-rank process group (gloo for a "cpu" mesh, nccl for "cuda"; verl's init context
    asks for the rank). The group is torn down after the test if this fixture started it."""
    import torch.distributed as dist

    started = []

    def make(device: str = "cpu"):
        from torch.distributed.device_mesh import init_device_mesh
        from verl.workers.config import HFModelConfig
        from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=f"file://{tmp_path}/pg",
                                    rank=0, world_size=1)
            started.append(device)
        engine = FSDPEngine.__new__(FSDPEngine)
        # no tie_word_embeddings override: hook L fills it (verl's _build_module reads it)
        engine.model_config = HFModelConfig(path=str(tiny_model_dir), override_config={"attn_implementation": "sdpa"})
        engine.device_mesh = init_device_mesh(device, (1,), mesh_dim_names=("fsdp",))
        engine.use_remove_padding, engine.ulysses_sequence_parallel_size = False, 1
        return engine

    yield make
    if started:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir: Path):
    """The tiny checkpoint as a transformers model (fp32, the adapter's hooks installed) and verl's processor for it."""
    import torch
    import transformers.models.qwen2_audio.modeling_qwen2_audio as modeling
    from transformers import Qwen2AudioForConditionalGeneration
    from verl.utils import hf_processor

    from r1aqa_plugin.models.qwen2_audio import verl_hooks

    verl_hooks.install()
    assert getattr(modeling.Qwen2AudioModel.forward, "__r1aqa_patched__", False)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model, hf_processor(str(tiny_model_dir))
