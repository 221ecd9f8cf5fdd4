"""Where the reference's weights live on one GPU: verl's offload (FSDP1 or FSDP2) against hook R's resident ones.

    python benchmarks/ref_offload_memory.py [--layers 16] [--width 8192] [--passes 3] [--weights bf16]
        [--json out.json]

verl 0.9.1 wraps the reference with FSDP1 ``CPUOffload(offload_params=True)`` (or FSDP2's ``CPUOffloadPolicy``),
``use_orig_params=False`` by default. On one GPU FSDP1 turns ``FULL_SHARD`` into ``NO_SHARD``. The question this
answers: after a no-grad forward (a reference pass), how much of the weights stays allocated on the GPU? In the
twenty-third GPU session the 7B on one H200 had the same GPU peak (94.6 GB) with the reference offloaded (`wins1v`)
and resident (`wins1vref`, hook R). A stack of ``--layers`` Linear(width, width) layers, each its own unit as
verl wraps decoder layers, stored in ``--weights`` (bf16: `ref.fsdp_config.model_dtype=bf16`, as `WINS=1`; fp32:
verl's default) and computed in bf16; one rank (a one-process NCCL group); each row in a fresh model, median of the
passes after the first. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

GB = 1e9


def model(layers: int, width: int, weights: str = "bf16") -> Any:
    """``layers`` Linear(width, width) layers on the CPU, as verl builds the reference before wrapping it."""
    import torch

    torch.manual_seed(0)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[weights]
    return torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False, dtype=dtype) for _ in range(layers)])


def wrap(net: Any, how: str) -> Any:
    """``net`` placed as verl's reference would be (``fsdp1``, ``fsdp1-orig``, ``fsdp2``) or resident (hook R)."""
    import torch
    from torch.distributed.fsdp import CPUOffload, MixedPrecision, ShardingStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    if how in ("fsdp1", "fsdp1-orig", "resident"):  # resident: hook R, FSDP1 without the offload
        return FSDP(net, auto_wrap_policy=ModuleWrapPolicy({torch.nn.Linear}), device_id=torch.cuda.current_device(),
                    sharding_strategy=ShardingStrategy.FULL_SHARD,  # verl's choice; NO_SHARD on one rank
                    mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                                   buffer_dtype=torch.float32),
                    use_orig_params=how == "fsdp1-orig",
                    cpu_offload=None if how == "resident" else CPUOffload(offload_params=True))
    if how == "fsdp2":
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        policy = {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                                    cast_forward_inputs=True),
                  "offload_policy": CPUOffloadPolicy(pin_memory=True)}
        for layer in net:
            fully_shard(layer, **policy)
        return fully_shard(net, **policy)
    raise ValueError(f"unknown placement {how!r}")


def measure(how: str, layers: int, width: int, passes: int, rows: int, weights: str = "bf16") -> dict[str, Any]:
    """GPU memory allocated after wrapping and after each no-grad forward, and the forward's time, for one placement."""
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    net = model(layers, width, weights)
    weights_gb = sum(p.numel() * p.element_size() for p in net.parameters()) / GB
    net = wrap(net, how)
    wrapped = torch.cuda.memory_allocated() - base
    x = torch.randn(rows, width, device="cuda", dtype=torch.bfloat16)
    after, times = [], []
    for _ in range(passes):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            net(x)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        after.append((torch.cuda.memory_allocated() - base - x.numel() * x.element_size()) / GB)
    peak = (torch.cuda.max_memory_allocated() - base) / GB
    del net, x
    return {"placement": how, "weights_gb": weights_gb, "after_wrap_gb": wrapped / GB,
            "after_forward_gb": after, "peak_gb": peak,
            "forward_s": statistics.median(times[1:]) if len(times) > 1 else times[0], "first_forward_s": times[0]}


def main(argv: list[str] | None = None) -> int:
    """Measure every placement and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--rows", type=int, default=4096, help="tokens a forward (a reference micro-batch)")
    ap.add_argument("--placements", default="fsdp1,fsdp1-orig,fsdp2,resident")
    ap.add_argument("--weights", choices=("bf16", "fp32"), default="bf16", help="the stored dtype; compute is bf16")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    import torch
    import torch.distributed as dist

    if not torch.cuda.is_available():
        print("ref_offload_memory.py needs CUDA: FSDP's CPU offload moves weights to a GPU", file=sys.stderr)
        return 2
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.cuda.set_device(0)
    try:
        results = [measure(how, a.layers, a.width, a.passes, a.rows, a.weights) for how in a.placements.split(",")]
    finally:
        dist.destroy_process_group()
    print(f"\nThe reference's weights on one GPU after no-grad forwards: {a.layers} x Linear({a.width}, {a.width}) "
          f"stored in {a.weights}, computed in bf16, {a.rows} rows a forward; torch {torch.__version__}, "
          f"{torch.cuda.get_device_name()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| placement | weights GB | on the GPU after wrapping, GB | after each forward, GB | peak GB | forward s "
          "(first) |")
    print("|---|---:|---:|---|---:|---:|")
    for r in results:
        each = " / ".join(f"{g:.2f}" for g in r["after_forward_gb"])
        print(f"| {r['placement']} | {r['weights_gb']:.2f} | {r['after_wrap_gb']:.2f} | {each} | {r['peak_gb']:.2f} | "
              f"{r['forward_s']:.3f} ({r['first_forward_s']:.3f}) |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
