"""Hook V's optimizer step: the AdamW state lives in host memory and visits the GPU a chunk of parameters at a time.

verl 0.9.1's ``optimizer_offload`` moves the whole optimizer state to the GPU when the actor enters train mode and
back when it leaves, so during the update the GPU holds the fp32 weights, their gradients and both AdamW moments at
once: 134 GB for the 7B, more than an H200 (measured: out of memory at the first step). Here the state stays in
host memory through the forward and backward passes, and the step runs chunk by chunk: a chunk's moments are copied
in, the optimizer's own ``step`` updates that chunk's parameters, and the moments go back. The maths is the
optimizer's own, parameter by parameter, so the result equals one ``step`` over every parameter; the GPU holds one
chunk's moments on top of the weights and gradients.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

STREAM_ENV = "R1AQA_OPTIMIZER_STREAM"  # "1": hook V on (with verl's actor.fsdp_config.optimizer_offload=True)
CHUNK_ENV = "R1AQA_OPTIMIZER_STREAM_MB"  # parameter bytes a chunk, in MB (default 1024: 2 GB of fp32 moments)


def stream_enabled() -> bool:
    """Whether hook V streams the optimizer step (off unless ``R1AQA_OPTIMIZER_STREAM=1``)."""
    return os.environ.get(STREAM_ENV) == "1"


def chunk_bytes() -> int:
    """The parameter bytes a chunk holds, from ``R1AQA_OPTIMIZER_STREAM_MB``."""
    raw = os.environ.get(CHUNK_ENV, "1024")
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if mb <= 0:
        raise ValueError(f"{CHUNK_ENV}={raw!r}: expected a positive number of megabytes")
    return int(mb * 2**20)


def chunks(params: list[torch.Tensor], limit: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of ``params`` of at most ``limit`` bytes each (a larger parameter is a chunk of its own)."""
    run: list[torch.Tensor] = []
    size = 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        if run and size + nbytes > limit:
            yield run
            run, size = [], 0
        run.append(p)
        size += nbytes
    if run:
        yield run


def move_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], device: torch.device | str | None) -> None:
    """Move the per-element state (moments, not the scalar step counts) of ``params`` to ``device``, or to each
    parameter's own device when ``device`` is None."""
    for p in params:
        state = optimizer.state.get(p)
        if not state:
            continue
        where = p.device if device is None else torch.device(device)
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.device != where:
                state[key] = value.to(where, non_blocking=True)


def streamed_step(optimizer: torch.optim.Optimizer, step: Callable[[], Any], limit: int) -> int:
    """Run ``step`` (the optimizer's own) once per chunk of the parameters that have gradients, each chunk's state on
    the parameters' device only for its step; the state ends in host memory. Returns the number of chunks."""
    groups = optimizer.param_groups
    kept = [group["params"] for group in groups]
    n = 0
    devices = set()
    try:
        for index, params in enumerate(kept):
            for chunk in chunks([p for p in params if p.grad is not None], limit):
                for j, group in enumerate(groups):
                    group["params"] = chunk if j == index else []
                move_state(optimizer, chunk, None)
                step()
                move_state(optimizer, chunk, "cpu")
                devices.update(p.device.type for p in chunk)
                n += 1
    finally:
        for group, params in zip(groups, kept):
            group["params"] = params
    if "cuda" in devices:
        torch.cuda.synchronize()  # the moments' copies to (pinned) host memory are done before anyone reads them
    return n
