"""Where a profiled verl step's GPU time goes: one table per torch-profiler chrome trace.

verl writes the traces with ``global_profiler.tool=torch`` (``grpo_step_bench.py``'s ``prof`` variant sets it).
For each stage verl marks (``ref_compute_log_prob``, ``actor_update``, ...), the table gives its wall time, how much
of it the GPU was busy (the union of kernel and copy intervals, so overlapping streams count once) and how the
kernel time splits into kinds: matmuls, attention, NCCL, log-softmax, optimizer, copies, the rest. A stage that
keeps the GPU busy under ~80% of its wall time is waiting on the host (Python, syncs), not on the GPU's maths.
A second table does the same per micro-batch (verl's ``micro_batchN`` markers) and splits the GPU's idle time into
short gaps (between launches: the host cannot launch fast enough) and long ones (syncs, host work).
A kernel counts for the stage whose host code launched it (torch's correlation ids), wherever the GPU ran it.

    python benchmarks/trace_report.py TRACE.json.gz [TRACE ...] [--top 12]
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
COPY_KINDS = {"memcpy", "memset"}  # kind_of's names for the GPU events that are not kernels
STAGE_CATS = {"user_annotation", "gpu_user_annotation"}
# verl's own stage names (DistProfiler.annotate roles) and the update loop's mini-batch markers are stages;
# other record_function names (torch's internals) are not
STAGE_NAME = re.compile(r"^(ref_compute_log_prob|actor_compute_log_prob|actor_update|train_batch|mini_batch\d+|"
                        r"update_weights|compute_log_prob|update_actor)$")
# First match wins. cuBLAS on Hopper names its kernels nvjet_* / sm90_xmma_gemm_*; sdpa without flash-attn runs
# PyTorch's memory-efficient kernels (fmha_cutlass*), or cuDNN's.
KINDS: list[tuple[str, re.Pattern[str]]] = [
    ("nccl", re.compile(r"nccl", re.IGNORECASE)),
    ("attention", re.compile(r"fmha|flash|attention|efficient_attention|cudnn.*(sdpa|mha)", re.IGNORECASE)),
    ("matmul", re.compile(r"gemm|nvjet|cutlass|xmma|cublas|splitk", re.IGNORECASE)),
    ("log-softmax", re.compile(r"softmax|logsumexp|cross_entropy|nll_loss", re.IGNORECASE)),
    ("optimizer", re.compile(r"multi_tensor|adam|fused_sgd", re.IGNORECASE)),
]


def kind_of(event: dict[str, Any]) -> str:
    """The kind of one GPU event: a copy or set by its category, a kernel by its name."""
    if event.get("cat") == "gpu_memcpy":
        return "memcpy"
    if event.get("cat") == "gpu_memset":
        return "memset"
    name = event.get("name", "")
    for kind, pattern in KINDS:
        if pattern.search(name):
            return kind
    return "other"


def union_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals, in the intervals' unit."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


@dataclass
class Stage:
    """One marked stage of a trace and the GPU work inside its wall window."""

    name: str
    start: float
    end: float
    busy_us: float = 0.0
    by_kind: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def wall_us(self) -> float:
        """The stage's wall time in microseconds."""
        return self.end - self.start


def load_events(path: Path) -> list[dict[str, Any]]:
    """The complete ("X") events of a chrome trace, gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise ValueError(f"{path}: no traceEvents list (not a chrome trace)")
    return [e for e in events if e.get("ph") == "X" and "dur" in e and "ts" in e]


def launch_times(events: list[dict[str, Any]]) -> dict[Any, float]:
    """Host time of each kernel launch or copy call, by the correlation id that ties it to its GPU event."""
    return {e["args"]["correlation"]: float(e["ts"]) for e in events
            if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}


GpuEvent = tuple[float, float, float, str]  # (host launch time, GPU start, duration, kind), all in us


def gpu_work(events: list[dict[str, Any]]) -> list[GpuEvent]:
    """Every GPU event with the host time that launched it, sorted by that time. A kernel belongs to the stage that
    launched it, although the GPU may run it after the host moved on; without a launch record (no correlation id),
    to the stage its start falls in."""
    launched = launch_times(events)
    return sorted((launched.get(e.get("args", {}).get("correlation"), float(e["ts"])), float(e["ts"]),
                   float(e["dur"]), kind_of(e)) for e in events if e.get("cat") in GPU_CATS)


def stages_of(events: list[dict[str, Any]], gpu: list[GpuEvent] | None = None) -> list[Stage]:
    """verl's stages (CPU markers), each with the GPU events its host window launched, then the whole trace
    (``gpu``: ``gpu_work(events)``, when the caller has it already)."""
    marks = [e for e in events if e.get("cat") in STAGE_CATS and STAGE_NAME.match(e.get("name", ""))]
    cpu = [e for e in marks if e["cat"] == "user_annotation"]
    stages = [Stage(e["name"], float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in (cpu or marks)]
    if events:  # everything, marked or not (verl marks no stage around the weight sync, for one)
        stages.append(Stage("(whole trace)", min(float(e["ts"]) for e in events),
                            max(float(e["ts"]) + float(e["dur"]) for e in events) + 1))
    gpu = gpu_work(events) if gpu is None else gpu
    for stage in stages:
        inside = [g for g in gpu if stage.start <= g[0] < stage.end]
        stage.busy_us = union_us([(ts, ts + dur) for _, ts, dur, _ in inside])
        for _, _, dur, kind in inside:
            stage.by_kind[kind] += dur
    return stages


def top_kernels(events: list[dict[str, Any]], n: int) -> list[tuple[str, float, int]]:
    """The n GPU events with the most total time: (name, total us, count)."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") in GPU_CATS:
            name = e.get("name", "?")
            total[name] += float(e["dur"])
            count[name] += 1
    return sorted(((k, v, count[k]) for k, v in total.items()), key=lambda r: -r[1])[:n]


MICRO_BATCH = re.compile(r"^micro_batch\d+$")  # verl's per-micro-batch markers, in the reference pass and the update
SMALL_GAP_US = 500.0  # GPU idle gaps shorter than this sit between launches; longer ones are syncs or host work


@dataclass
class MicroBatches:
    """The micro-batches of one stage: what the host spent on each against what the GPU did for it."""

    stage: str
    walls_us: list[float] = field(default_factory=list)
    busy_us: list[float] = field(default_factory=list)
    kernels: list[int] = field(default_factory=list)
    kernel_us: list[float] = field(default_factory=list)  # every kernel's duration, for the median
    small_gaps_us: float = 0.0
    large_gaps_us: float = 0.0


def idle_gaps(intervals: list[tuple[float, float]]) -> list[float]:
    """The idle gaps between the union of [start, end) intervals, in the intervals' unit."""
    gaps, end = [], None
    for start, stop in sorted(intervals):
        if end is not None and start > end:
            gaps.append(start - end)
        end = stop if end is None else max(end, stop)
    return gaps


def micro_batches_of(events: list[dict[str, Any]], gpu: list[GpuEvent] | None = None) -> list[MicroBatches]:
    """verl's micro-batches grouped by the stage they ran in, each with the GPU work its host window launched:
    a micro-batch much longer on the host than busy on the GPU, its idle time in many short gaps, is launch-bound
    (``gpu``: ``gpu_work(events)``, when the caller has it already)."""
    marks = [e for e in events if e.get("cat") == "user_annotation"]
    stages = [e for e in marks if STAGE_NAME.match(e.get("name", "")) and not e["name"].startswith("mini_batch")]
    gpu = gpu_work(events) if gpu is None else gpu
    hosts = [g[0] for g in gpu]
    groups: dict[str, MicroBatches] = {}
    for m in sorted((e for e in marks if MICRO_BATCH.match(e.get("name", ""))), key=lambda e: e["ts"]):
        start, end = float(m["ts"]), float(m["ts"]) + float(m["dur"])
        parent = next((s["name"] for s in stages if s["ts"] <= start and end <= s["ts"] + s["dur"]), "(no stage)")
        group = groups.setdefault(parent, MicroBatches(parent))
        inside = gpu[bisect.bisect_left(hosts, start):bisect.bisect_left(hosts, end)]
        spans = [(ts, ts + dur) for _, ts, dur, _ in inside]
        group.walls_us.append(end - start)
        group.busy_us.append(union_us(spans))
        kernels = [dur for _, _, dur, kind in inside if kind not in COPY_KINDS]
        group.kernels.append(len(kernels))
        group.kernel_us += kernels
        for gap in idle_gaps(spans):
            if gap < SMALL_GAP_US:
                group.small_gaps_us += gap
            else:
                group.large_gaps_us += gap
    return list(groups.values())


COLUMNS = ["matmul", "attention", "log-softmax", "nccl", "optimizer", "memcpy", "memset", "other"]


def report(path: Path, top: int = 12) -> str:
    """The markdown report of one trace: a row per stage, then its top GPU events."""
    events = load_events(path)
    gpu = gpu_work(events)
    stages = stages_of(events, gpu)
    lines = [f"### {path.name}", "",
             "| stage | wall s | GPU busy s | busy % | " + " | ".join(f"{c} s" for c in COLUMNS) + " |",
             "|---|" + "---:|" * (3 + len(COLUMNS))]
    for s in stages:
        busy = 100.0 * s.busy_us / s.wall_us if s.wall_us else 0.0
        kinds = " | ".join(f"{s.by_kind.get(c, 0.0) / 1e6:.3f}" for c in COLUMNS)
        lines.append(f"| {s.name} | {s.wall_us / 1e6:.3f} | {s.busy_us / 1e6:.3f} | {busy:.0f} | {kinds} |")
    if groups := micro_batches_of(events, gpu):
        lines += ["", "Micro-batches (means over each stage's; idle: the GPU's gaps between the work a micro-batch "
                  f"launched, under and over {SMALL_GAP_US / 1e3:g} ms):", "",
                  "| stage | micro-batches | host wall s | GPU busy s | busy % | kernels | median kernel us | "
                  "idle in short gaps s | idle in long gaps s |", "|---|" + "---:|" * 8]
        for g in groups:
            n = len(g.walls_us)
            wall, busy = sum(g.walls_us) / n, sum(g.busy_us) / n
            median = statistics.median(g.kernel_us) if g.kernel_us else 0.0
            lines.append(f"| {g.stage} | {n} | {wall / 1e6:.3f} | {busy / 1e6:.3f} | "
                         f"{100.0 * busy / wall if wall else 0.0:.0f} | {sum(g.kernels) / n:.0f} | {median:.1f} | "
                         f"{g.small_gaps_us / n / 1e6:.3f} | {g.large_gaps_us / n / 1e6:.3f} |")
    lines += ["", f"Top {top} GPU events by total time (kernel kinds summed over streams; busy % is their union):",
              "", "| GPU event | kind | total s | count |", "|---|---|---:|---:|"]
    for name, total_us, n in top_kernels(events, top):
        short = name if len(name) <= 90 else name[:87] + "..."
        lines.append(f"| `{short}` | {kind_of({'name': name, 'cat': 'kernel'})} | {total_us / 1e6:.3f} | {n} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the report of every trace given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="+", type=Path, help="torch profiler chrome traces (.json or .json.gz)")
    parser.add_argument("--top", type=int, default=12, help="how many GPU events to list per trace")
    args = parser.parse_args(argv)
    for path in args.traces:
        print(report(path, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
