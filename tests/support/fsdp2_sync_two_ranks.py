"""verl's FSDP2 engine on two gloo ranks on the CPU, full fine-tuning or the LoRA recipe: build, wrap, and one
weight sync (``get_per_tensor_param``, what verl streams to vLLM). Rank 0 writes what it saw as JSON.

    python tests/support/fsdp2_sync_two_ranks.py MODEL_DIR WORK_DIR {full,lora}

Used by tests/test_recipes.py: on two ranks verl 0.9.1's FSDP2 wrap of Qwen2-Audio failed without hook S, and the
projector's LoRA adapter never reached vLLM without hook Q.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def run(rank: int, model_dir: str, work: str, mode: str) -> None:
    """One rank: build verl's engine as its FSDP worker does, sync once, and (rank 0) record the result."""
    dist.init_process_group("gloo", init_method=f"file://{work}/pg", rank=rank, world_size=WORLD)
    from safetensors import safe_open
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor
    from verl.utils import fsdp_utils
    from verl.workers.config import FSDPEngineConfig, HFModelConfig
    from verl.workers.engine.fsdp import transformer_impl
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    from r1aqa_plugin.models.qwen2_audio import verl_hooks
    from r1aqa_plugin.models.qwen2_audio.vllm_model import Qwen2AudioWithV5Names

    verl_hooks.install()
    # the model lives on the CPU here: verl's device id, its CUDA staging and its CUDA memory log step aside
    for where in (transformer_impl, fsdp_utils):
        where.get_device_id = lambda: torch.device("cpu")
    for name in ("load_fsdp_model_to_gpu", "offload_fsdp_model_to_cpu", "log_gpu_memory_usage"):
        setattr(transformer_impl, name, lambda *a, **k: None)
    lora = {"lora_rank": 32, "lora_alpha": 64, "target_modules": "all-linear", "exclude_modules": ".*audio_tower.*",
            "lora": {"merge": True}} if mode == "lora" else {}
    engine = FSDPEngine.__new__(FSDPEngine)
    engine.model_config = HFModelConfig(path=model_dir, override_config={"attn_implementation": "sdpa"}, **lora)
    engine.device_mesh = init_device_mesh("cpu", (WORLD,), mesh_dim_names=("fsdp",))
    engine.use_remove_padding, engine.ulysses_sequence_parallel_size = False, 1
    engine.engine_config = FSDPEngineConfig(strategy="fsdp2", model_dtype="fp32")
    engine._is_lora, engine._is_offload_param, engine._uses_fsdp2_cpu_offload_policy = bool(lora), False, False
    engine._qat_enabled = False
    module = engine._build_module()
    adapters = {}
    if lora:
        module = engine._build_lora_module(module)
        torch.manual_seed(0)
        for name, sub in module.named_modules():
            if hasattr(sub, "lora_B"):
                torch.nn.init.normal_(sub.lora_B["default"].weight, std=0.05)  # verl starts B at 0: make it show
                # rank 0 holds the real weights; the others build on the meta device and get them by broadcast
                adapters[name] = tuple(w.detach().clone() for w in (sub.base_layer.weight, sub.lora_A["default"].weight,
                                                                    sub.lora_B["default"].weight))
    engine.module = engine._build_fsdp_module(module)
    stream, _ = engine.get_per_tensor_param()
    sent = {name: (t.full_tensor() if isinstance(t, DTensor) else t).float() for name, t in stream}
    if rank == 0:
        mapper = Qwen2AudioWithV5Names.hf_to_vllm_mapper
        with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:
            checkpoint = {name: f.get_tensor(name).float() for name in f.keys()}  # noqa: SIM118 (not a dict)
        loaded = {mapper._map_name(name): tensor for name, tensor in sent.items()}
        adapted = {mapper._map_name(n.replace("base_model.model.", "") + ".weight"): (base + 2.0 * (b @ a))
                   for n, (base, a, b) in adapters.items()}
        errors = {name: ((loaded[name] - want).abs() / (want.abs() + 1e-3)).max().item()
                  for name, want in adapted.items()}
        result = {"names_match": sorted(loaded) == sorted(checkpoint), "adapted": len(adapted),
                  "worst_relative_error": max(errors.values(), default=0.0),
                  "worst": max(errors, key=errors.get, default=None),
                  "others_as_loaded": all(torch.equal(t, checkpoint[n]) for n, t in loaded.items() if n not in adapted)}
        (Path(work) / "result.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def main() -> int:
    """Spawn the two ranks and print rank 0's result."""
    model_dir, work, mode = sys.argv[1:4]
    mp.spawn(run, args=(model_dir, work, mode), nprocs=WORLD)
    print((Path(work) / "result.json").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
