"""Hook T: the LoRA recipe's weight sync to vLLM merges each adapter out of place, while it streams.

With ``lora.merge: true`` verl 0.9.1 sends vLLM the merged weights W + s B A at every step
(``FSDPEngine._merged_lora_per_tensor_param``). To do so it merges the adapters into the live parameters and undoes
the merge afterwards from a backup: every parameter of the model is cloned on the GPU, copied into freshly allocated
pageable host memory, merged in place (under FSDP1 inside ``summon_full_params`` with write-back), and copied back
from the host after the sync. For the 7B on one H200 that is ~34 GB of fp32 down and up again per step: the sync
took 27.5 s in the twentieth session's ``lora1`` (docs/benchmarks.md), against 1.65 s for full fine-tuning's sync
on two GPUs.

Nothing needs to be merged in place. Here each adapted weight is sent as a new tensor, W + s B A computed in fp32
from the state dict's own W, A and B, and every other tensor as verl sends it; the module's parameters are never
written, so there is nothing to back up or restore. Every LoRA layer the state dict holds is covered, the root
unit's too (the audio projector, which verl's FSDP2 merge skipped: hook Q). Layers the plan cannot express exactly
(DoRA, LoRA biases, non-Linear layers, several active adapters, a layer already merged) send the whole sync back to
verl's own path, with one log line saying why. ``R1AQA_LORA_SYNC_OUT_OF_PLACE=0`` turns the hook off (A/B timing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

OUT_OF_PLACE_ENV = "R1AQA_LORA_SYNC_OUT_OF_PLACE"
_WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def out_of_place_enabled() -> bool:
    """Whether hook T merges out of place (``R1AQA_LORA_SYNC_OUT_OF_PLACE`` unset or not "0")."""
    return os.environ.get(OUT_OF_PLACE_ENV, "1") != "0"


@dataclass(frozen=True)
class Adapted:
    """One LoRA layer's state-dict keys and how its delta is formed."""

    base: str
    lora_a: str
    lora_b: str
    scaling: float
    fan_in_fan_out: bool


def _state_dict_name(module_name: str) -> str:
    for part in _WRAPPER_PARTS:  # FSDP1 and activation checkpointing wrap modules; state dict keys leave them out
        module_name = module_name.replace(part, "")
    return module_name


def merge_plan(module: Any, keys: set[str]) -> tuple[dict[str, Adapted], str | None]:
    """{base weight key: its adapter} for every LoRA layer of ``module``, or ({}, why not) when a layer cannot be
    merged out of place exactly as peft's ``merge()`` would."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    plan: dict[str, Adapted] = {}
    for name, layer in module.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        where = _state_dict_name(name)
        if type(layer) is not LoraLinear:
            return {}, f"{where} is a {type(layer).__name__}, not a LoRA Linear"
        if getattr(layer, "merged", False):
            return {}, f"{where} is already merged"
        active = [a for a in layer.active_adapters if a in layer.lora_A]
        if len(active) != 1:
            return {}, f"{where} has {len(active)} active adapters"
        adapter = active[0]
        if layer.use_dora.get(adapter, False) or getattr(layer, "lora_bias", {}).get(adapter, False):
            return {}, f"{where} uses DoRA or a LoRA bias"
        entry = Adapted(base=f"{where}.base_layer.weight", lora_a=f"{where}.lora_A.{adapter}.weight",
                        lora_b=f"{where}.lora_B.{adapter}.weight", scaling=float(layer.scaling[adapter]),
                        fan_in_fan_out=bool(layer.fan_in_fan_out))
        missing = [k for k in (entry.base, entry.lora_a, entry.lora_b) if k not in keys]
        if missing:
            return {}, f"the state dict has no {missing[0]}"
        plan[entry.base] = entry
    return plan, None


def merged_weight(base: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, entry: Adapted) -> torch.Tensor:
    """W + scaling * B A in fp32 (peft's ``get_delta_weight`` for a Linear layer), as a new tensor."""
    delta = lora_b.float() @ lora_a.float()
    if entry.fan_in_fan_out:
        delta = delta.T
    return base.float() + entry.scaling * delta


def stream(state_dict: dict[str, Any], plan: dict[str, Adapted], names: dict[str, str],
           gather: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name sent, tensor) for every key ``names`` keeps, in the dtype verl sends it: adapted weights merged
    out of place, the rest as they are. ``gather(entry)`` turns a state-dict entry into its full tensor on the
    sending device (a DTensor's ``full_tensor()``; a plain tensor itself)."""
    from torch.distributed.tensor import DTensor

    for key, sent_name in names.items():
        entry = state_dict[key]
        # verl sends FSDP2's (DTensor) weights in bf16 and FSDP1's in their own dtype: the same here
        dtype = torch.bfloat16 if isinstance(entry, DTensor) else entry.dtype
        adapted = plan.get(key)
        if adapted is not None:
            full = [gather(state_dict[k]) for k in (adapted.base, adapted.lora_a, adapted.lora_b)]
            yield sent_name, merged_weight(*full, adapted).to(dtype)  # a new tensor already
        elif isinstance(entry, DTensor):
            yield sent_name, gather(entry).to(dtype)  # full_tensor() gathered a copy
        else:
            # a copy: plain state-dict tensors alias the live weights, which the next update changes
            yield sent_name, entry.detach().clone()
