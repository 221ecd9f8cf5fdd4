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
OVERLAP_ENV = "R1AQA_OPTIMIZER_STREAM_OVERLAP"  # "0": the copies in line with the steps (default "1": side streams)


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


def _state_tensors(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> Iterator[tuple[dict, str]]:
    """(state, key) of each per-element state tensor of ``params``: the moments, not the scalar step counts."""
    for p in params:
        for key, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value) and value.dim() > 0:
                yield optimizer.state[p], key


def overlap_enabled() -> bool:
    """Whether the copies run on side CUDA streams (on unless ``R1AQA_OPTIMIZER_STREAM_OVERLAP=0``)."""
    # on by default since the twenty-second GPU session: 1.37 s against 4.09 s in line for the 7B's 33.6 GB of
    # parameters (benchmarks/optimizer_stream_bench.py), exact on the GPU (tests/test_gpu_hooks.py)
    raw = os.environ.get(OVERLAP_ENV, "1")
    if raw not in ("0", "1"):
        raise ValueError(f"{OVERLAP_ENV}={raw!r}: expected 0 (copies in line) or 1 (side CUDA streams)")
    return raw == "1"


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP2's moments), or the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def to_host(value: torch.Tensor, home: torch.Tensor | None) -> torch.Tensor:
    """``value`` back in host memory: copied into ``home``, its host copy from before the step, when that matches
    (so the pinned buffers are allocated once, at the first step, and the host's memory stays flat); else a new copy
    (pinned when it comes from CUDA)."""
    if (home is not None and home.device.type == "cpu" and home.shape == value.shape and home.dtype == value.dtype
            and (value.device.type == "cpu" or _local(home).is_pinned())):
        _local(home).copy_(_local(value), non_blocking=True)
        return home
    return value.to("cpu", non_blocking=True)


class _Homes:
    """Each moment's host copy while its chunk steps on the GPU: the step's result is written back into it. Without
    it every step allocated new pinned buffers (the caching host allocator rounds each up to a power of two and
    reuses a freed one only once its copy is done). The twenty-second GPU session's 7B ran that way: 165 -> 184 ->
    190 GB of the host in use over three steps, and a second update 16 s longer than the third, which this fits
    (not yet rerun)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.kept: dict[tuple[int, str], torch.Tensor] = {}

    def load(self, chunk: list[torch.Tensor]) -> None:
        """The chunk's moments onto its parameters' device, their host copies kept."""
        for p in chunk:
            for state, key in _state_tensors(self.optimizer, [p]):
                if state[key].device != p.device:
                    self.kept[(id(state), key)] = state[key]
                    state[key] = state[key].to(p.device, non_blocking=True)

    def unload(self, chunk: list[torch.Tensor]) -> None:
        """The chunk's moments back into their host copies (new ones at the first step, when the optimizer has just
        made them on the GPU)."""
        for state, key in _state_tensors(self.optimizer, chunk):
            if state[key].device.type != "cpu":
                state[key] = to_host(state[key], self.kept.pop((id(state), key), None))


def _record(tensor: torch.Tensor, stream: torch.cuda.Stream) -> None:
    """``record_stream`` on a tensor's storage (a DTensor's local shard: FSDP2's moments)."""
    _local(tensor).record_stream(stream)


class _SideStreams:
    """Hook V's copies beside the steps on CUDA: the next chunk's moments come in on one stream while the current
    chunk steps, and a stepped chunk's moments go out on another. Each tensor is recorded on every stream that uses
    it, so the caching allocator does not hand its memory out before those uses are done."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.homes = _Homes(optimizer)
        self.copy_in, self.copy_out = torch.cuda.Stream(), torch.cuda.Stream()

    def load(self, chunk: list[torch.Tensor]) -> torch.cuda.Event:
        with torch.cuda.stream(self.copy_in):
            self.homes.load(chunk)
            return self.copy_in.record_event()

    def ready(self, chunk: list[torch.Tensor], loaded: torch.cuda.Event) -> None:
        main = torch.cuda.current_stream()
        main.wait_event(loaded)
        for state, key in _state_tensors(self.optimizer, chunk):
            _record(state[key], main)

    def unload(self, chunk: list[torch.Tensor]) -> None:
        stepped = torch.cuda.current_stream().record_event()
        with torch.cuda.stream(self.copy_out):
            self.copy_out.wait_event(stepped)
            for state, key in _state_tensors(self.optimizer, chunk):
                if state[key].device.type == "cuda":
                    _record(state[key], self.copy_out)
            self.homes.unload(chunk)


def streamed_step(optimizer: torch.optim.Optimizer, step: Callable[[], Any], limit: int,
                  overlap: bool = False) -> int:
    """Run ``step`` (the optimizer's own) once per chunk of the parameters that have gradients, each chunk's state on
    the parameters' device only for its step; the state ends in host memory. With ``overlap`` (CUDA only) the
    copies run on side streams beside the steps. Returns the number of chunks."""
    groups = optimizer.param_groups
    kept = [group["params"] for group in groups]
    plan = [(index, chunk) for index, params in enumerate(kept)
            for chunk in chunks([p for p in params if p.grad is not None], limit)]
    on_cuda = any(p.device.type == "cuda" for _, chunk in plan for p in chunk)
    side = _SideStreams(optimizer) if overlap and on_cuda else None
    homes = side.homes if side else _Homes(optimizer)
    try:
        loaded = side.load(plan[0][1]) if side and plan else None
        for i, (index, chunk) in enumerate(plan):
            for j, group in enumerate(groups):
                group["params"] = chunk if j == index else []
            if side:
                side.ready(chunk, loaded)
                if i + 1 < len(plan):
                    loaded = side.load(plan[i + 1][1])  # the next chunk's moments come in while this one steps
            else:
                homes.load(chunk)
            step()
            if side:
                side.unload(chunk)
            else:
                homes.unload(chunk)
    finally:
        for group, params in zip(groups, kept):
            group["params"] = params
    if on_cuda:
        torch.cuda.synchronize()  # the moments' copies to (pinned) host memory are done before anyone reads them
    return len(plan)
