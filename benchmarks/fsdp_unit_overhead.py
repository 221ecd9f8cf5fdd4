"""Host time per FSDP unit: FSDP1 (as verl runs it on one GPU: NO_SHARD, bf16 mixed precision) against FSDP2, one rank.

    python benchmarks/fsdp_unit_overhead.py [--device cuda] [--units 50,450] [--dim 16] [--repeats 10]
    python benchmarks/fsdp_unit_overhead.py --device cpu --units 4,12 --repeats 3     # seconds on a CPU

Why: verl's FSDP1 wrap policy for LoRA makes every ``lora_A`` and ``lora_B`` Linear a unit of its own, 394 more
units on the 7B than FSDP2's layer-only wrap. Each unit runs its hooks in the forward and the backward of every
micro-batch. Here a chain of tiny Linear layers, each its own unit, runs a forward and backward, so the compute
is nil and the time is the wrapping's. The slope between the two unit counts is the cost of one unit; ``plain``
(no FSDP) is the floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


def chain(units: int, dim: int, device: torch.device) -> nn.Sequential:
    """``units`` Linear(dim, dim) layers in a row: the model whose only cost is its wrapping."""
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(dim, dim) for _ in range(units)]).to(device)


def wrap_fsdp1(model: nn.Sequential, device: torch.device) -> nn.Module:
    """Each layer and the whole as FSDP1 units, as verl's engine wraps on one GPU."""
    from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision, ShardingStrategy

    options = {"sharding_strategy": ShardingStrategy.NO_SHARD, "device_id": device,
               "mixed_precision": MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                                 buffer_dtype=torch.float32)}
    for i in range(len(model)):
        model[i] = FullyShardedDataParallel(model[i], **options)
    return FullyShardedDataParallel(model, **options)


def wrap_fsdp2(model: nn.Sequential, device: torch.device) -> nn.Module:
    """Each layer and the whole as FSDP2 units with verl's mixed-precision policy."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (1,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


WRAPS: dict[str, Callable[[nn.Sequential, torch.device], nn.Module]] = {
    "plain": lambda model, device: model, "fsdp1": wrap_fsdp1, "fsdp2": wrap_fsdp2}


def step_seconds(model: nn.Module, dim: int, device: torch.device, repeats: int) -> float:
    """Median wall time of one forward and backward, after two warm-ups."""
    x = torch.randn(2, dim, device=device)
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x).float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(device: torch.device, units: tuple[int, int], dim: int, repeats: int) -> list[dict]:
    """One row a wrapping: the step time at both unit counts and the slope, in microseconds a unit."""
    rows = []
    for name, wrap in WRAPS.items():
        few, many = (step_seconds(wrap(chain(n, dim, device), device), dim, device, repeats) for n in units)
        rows.append({"wrap": name, f"ms_{units[0]}": few * 1e3, f"ms_{units[1]}": many * 1e3,
                     "us_per_unit": (many - few) / (units[1] - units[0]) * 1e6})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the table (and write it as JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--units", default="50,450", help="two unit counts, fewer first")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path)
    a = parser.parse_args(argv)
    units = tuple(int(n) for n in a.units.split(","))
    if len(units) != 2 or not 0 < units[0] < units[1]:
        parser.error(f"--units needs two counts, fewer first (got {a.units!r})")
    device = torch.device(a.device, 0) if a.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"file://{tmp}/pg",
                                rank=0, world_size=1)
        try:
            rows = measure(device, units, a.dim, a.repeats)
        finally:
            dist.destroy_process_group()
    print(f"one {device.type} rank, Linear({a.dim}, {a.dim}) units, forward + backward, median of {a.repeats}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(f"| wrap | {units[0]} units, ms | {units[1]} units, ms | us a unit |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['wrap']} | {r[f'ms_{units[0]}']:.1f} | {r[f'ms_{units[1]}']:.1f} | {r['us_per_unit']:.0f} |")
    if a.json:
        a.json.write_text(json.dumps({"device": device.type, "units": units, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
