"""verl's real FSDPEngine on CPU ranks (gloo), for tests of what it syncs to vLLM and how its module runs: build,
LoRA, wrap, one sync, then the actor's passes on audio (with LoRA the reference pass first, then a forward and
backward).

Imported by tests/test_recipes.py (one rank, in the test process) and by tests/test_gpu_hooks.py (``build``, ``sync``
and ``forward_gap`` on one CUDA rank, without the CPU steering), and run as a script for two ranks:

    python tests/support/cpu_fsdp_engine.py MODEL_DIR WORK_DIR {full,lora,lora-in-place}

(lora-in-place: the LoRA recipe with hook T off, so verl merges the adapters in place for the sync.)

On two ranks verl 0.9.1's FSDP2 wrap of Qwen2-Audio failed without hook S, its forward failed without hook S's
position-table fix (one rank too), its first LoRA update failed without hook U when the reference pass came first,
and the projector's LoRA adapter never reached vLLM without hook Q; rank 0
writes what it saw to WORK_DIR/result.json.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# the LoRA recipe's settings (recipes/r1aqa_grpo_lora.yaml), with verl's merge into the synced weights
LORA = {"lora_rank": 32, "lora_alpha": 64, "target_modules": "all-linear", "exclude_modules": ".*audio_tower.*",
        "lora": {"merge": True}}


def steer_to_cpu(set_attr: Callable[[Any, str, Any], None]) -> None:
    """Let verl's engine run where the model lives, on the CPU: its device id, its CUDA staging and memory log step
    aside, and FSDP1 skips the rank-0 broadcast it refuses CPU tensors for. ``set_attr``: setattr or monkeypatch's."""
    from verl.utils import fsdp_utils
    from verl.workers.engine.fsdp import transformer_impl

    class CPUFSDP(transformer_impl.FSDP):
        def __init__(self, module: Any, **kwargs: Any) -> None:
            super().__init__(module, **{**kwargs, "sync_module_states": False})

    set_attr(transformer_impl, "FSDP", CPUFSDP)
    for where in (transformer_impl, fsdp_utils):
        set_attr(where, "get_device_id", lambda: torch.device("cpu"))
    for name in ("load_fsdp_model_to_gpu", "offload_fsdp_model_to_cpu", "log_gpu_memory_usage"):
        set_attr(transformer_impl, name, lambda *a, **k: None)


def build(engine: Any, model_dir: str, strategy: str, lora: dict | None,
          **engine_options: Any) -> dict[str, tuple[torch.Tensor, ...]]:
    """Build the engine's module as verl's worker does (LoRA if asked, B randomised so that the merge shows) and wrap
    it; return each LoRA layer's (W, A, B) from before the wrap. ``engine_options``: more FSDPEngineConfig fields
    (``offload_policy=True``: FSDP2's CPU offload, GPU only)."""
    from verl.workers.config import FSDPEngineConfig, HFModelConfig

    engine.model_config = HFModelConfig(path=model_dir, override_config={"attn_implementation": "sdpa"},
                                        **(lora or {}))
    engine.engine_config = FSDPEngineConfig(strategy=strategy, model_dtype="fp32", **engine_options)
    engine._is_lora, engine._is_offload_param, engine._uses_fsdp2_cpu_offload_policy = bool(lora), False, False
    engine._qat_enabled = False
    module = engine._build_module()
    adapters = {}
    if lora:
        module = engine._build_lora_module(module)
        torch.manual_seed(0)
        for name, sub in module.named_modules():
            if hasattr(sub, "lora_B"):
                torch.nn.init.normal_(sub.lora_B["default"].weight, std=0.05)  # verl starts B at 0
                adapters[name] = tuple(w.detach().clone() for w in (sub.base_layer.weight, sub.lora_A["default"].weight,
                                                                    sub.lora_B["default"].weight))
    engine.module = engine._build_fsdp_module(module)
    return adapters


def sync(engine: Any) -> dict[str, torch.Tensor]:
    """One weight sync as verl streams it to vLLM: {name as sent: full tensor, in the dtype sent}."""
    from torch.distributed.tensor import DTensor

    stream, _ = engine.get_per_tensor_param()
    return {name: t.full_tensor() if isinstance(t, DTensor) else t for name, t in stream}


def checkpoint(model_dir: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors in fp32, under its original names (what vLLM's loader ends up with)."""
    from safetensors import safe_open

    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:
        return {name: f.get_tensor(name).float() for name in f.keys()}  # noqa: SIM118 (not a dict)


def merged(adapters: dict[str, tuple[torch.Tensor, ...]], mapper: Any) -> dict[str, torch.Tensor]:
    """What each LoRA layer's weight must arrive as, W + (alpha / r) B A, under the name vLLM's loader gives it."""
    scale = LORA["lora_alpha"] / LORA["lora_rank"]
    return {mapper._map_name(n.replace("base_model.model.", "") + ".weight"): base + scale * (b @ a)
            for n, (base, a, b) in adapters.items()}


def audio_batch(model_dir: str) -> dict[str, torch.Tensor]:
    """Two prompts with 2 s and 3 s clips through the checkpoint's processor: the actor's forward inputs."""
    import numpy as np
    from transformers import AutoProcessor

    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(16000 * s)).astype(np.float32) for s in (2, 3)]
    text = "<|audio_bos|><|AUDIO|><|audio_eos|>Which sound is it?"
    return dict(AutoProcessor.from_pretrained(model_dir)(text=[text] * 2, audio=clips, sampling_rate=16000,
                                                         return_tensors="pt", padding=True))


def forward_gap(engine: Any, sent: dict[str, torch.Tensor], model_dir: str) -> float:
    """The passes verl's actor runs, through the wrapped module under its bf16 autocast (every rank must call it):
    with LoRA first the reference pass (no grad, adapters off: in bypass mode the module's first forward, hook U),
    then a forward and backward. Return the largest logit difference from a plain transformers model, holding the
    checkpoint for the reference pass and the synced weights for the other, over the logits' standard deviation."""
    from transformers import Qwen2AudioForConditionalGeneration

    device = engine.device_mesh.device_type
    batch = {k: v.to(device) for k, v in audio_batch(model_dir).items()}
    module = engine.module
    autocast = torch.autocast(device, dtype=getattr(engine, "_autocast_dtype", torch.bfloat16))
    got = {}
    if engine._is_lora:
        with torch.no_grad(), engine.disable_adapter(), autocast:
            got["checkpoint"] = module(**batch).logits.float()
    with autocast:
        logits = module(**batch).logits
    logits.float().pow(2).mean().backward()
    trained = [p for p in module.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and p.grad.dtype == p.dtype for p in trained)
    module.zero_grad(set_to_none=True)
    got["sent"] = logits.detach().float()
    plain = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).to(device)
    gaps = []
    for weights, have in got.items():  # the checkpoint's pass first: the synced weights replace it after
        if weights == "sent":
            plain.load_state_dict({name: t.float() for name, t in sent.items()}, strict=True)
        with torch.no_grad():
            want = plain(**batch).logits
        gaps.append(((have - want).abs().max() / want.std()).item())
    return max(gaps)


def _rank(rank: int, world: int, model_dir: str, work: str, mode: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{work}/pg", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    from r1aqa_plugin.models.qwen2_audio import verl_hooks
    from r1aqa_plugin.models.qwen2_audio.vllm_model import Qwen2AudioWithV5Names

    verl_hooks.install()
    steer_to_cpu(setattr)
    engine = FSDPEngine.__new__(FSDPEngine)
    engine.device_mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("fsdp",))
    engine.use_remove_padding, engine.ulysses_sequence_parallel_size = False, 1
    adapters = build(engine, model_dir, "fsdp2", LORA if mode.startswith("lora") else None)
    sent = {name: t.float() for name, t in sync(engine).items()}
    gap = forward_gap(engine, sent, model_dir)
    if rank == 0:  # the other ranks build on the meta device and get rank 0's weights by broadcast
        mapper = Qwen2AudioWithV5Names.hf_to_vllm_mapper
        stored = checkpoint(model_dir)
        loaded = {mapper._map_name(name): tensor for name, tensor in sent.items()}
        adapted = merged(adapters, mapper)
        errors = {name: ((loaded[name] - want).abs() / (want.abs() + 1e-3)).max().item()
                  for name, want in adapted.items()}
        result = {"names_match": sorted(loaded) == sorted(stored), "adapted": len(adapted),
                  "worst_relative_error": max(errors.values(), default=0.0),
                  "worst": max(errors, key=errors.get, default=None), "forward_gap": gap,
                  "others_as_loaded": all(torch.equal(t, stored[n]) for n, t in loaded.items() if n not in adapted)}
        (Path(work) / "result.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def main() -> int:
    """Spawn two ranks and print rank 0's result."""
    model_dir, work, mode = sys.argv[1:4]
    if mode == "lora-in-place":
        from r1aqa_plugin.models.qwen2_audio.lora_sync import OUT_OF_PLACE_ENV

        os.environ[OUT_OF_PLACE_ENV] = "0"  # the spawned ranks inherit it
    mp.spawn(_rank, args=(2, model_dir, work, mode), nprocs=2)
    print((Path(work) / "result.json").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
