"""Hook V side by side: one AdamW step with its state on the GPU, streamed from host memory by chunks, and streamed
with the copies overlapped on side streams.

    python benchmarks/optimizer_stream_bench.py [--full-gb 33.6] [--side-gb 8] [--tensor-mb 900] [--chunk-mb 1024]
    python benchmarks/optimizer_stream_bench.py --device cpu --full-gb 0.05 --side-gb 0.02 --tensor-mb 4 --chunk-mb 8

The side-by-side rows use ``--side-gb`` of fp32 parameters, small enough for the resident state to fit beside them.
The ``full`` rows use ``--full-gb`` (33.6 GB: the 7B's 8.4 B parameters) with the tensors ``--tensor-mb`` large, as
FSDP1 flattens a decoder layer. Each step moves the two moments in and out: 4 bytes x 2 moments x 2 directions a
parameter. Median of ``--repeats`` after one step that creates the state; the last column is how much the
process's resident host memory grew over those steps (hook V writes each step's moments back into the host copies
the first step made, so ~0). A last, control row at the full size: new host buffers each step, as hook V did until
the twenty-second GPU session.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from host_memory import rss_gb  # noqa: E402  (benchmarks/host_memory.py, beside this file)
from r1aqa_plugin.models.qwen2_audio import streamed_step as hook_v  # noqa: E402

MODES = ("resident", "streamed", "overlapped")
# control, full size only: hook V as it was until the twenty-second session, each step's moments coming back into
# new (pinned) host buffers instead of the copies the first step made
FRESH = "streamed, new host buffers"


def _params(gb: float, tensor_mb: float, device: torch.device) -> list[torch.nn.Parameter]:
    """fp32 parameters of ``gb`` in all, ``tensor_mb`` each (the last one smaller), with gradients."""
    total, each = int(gb * 1e9 / 4), max(1, int(tensor_mb * 2**20 / 4))
    sizes = [each] * (total // each) + ([total % each] if total % each else [])
    params = []
    for n in sizes:
        p = torch.nn.Parameter(torch.empty(n, device=device).uniform_(-0.02, 0.02))
        p.grad = torch.empty_like(p).normal_(0, 1e-3)
        params.append(p)
    return params


def run(mode: str, gb: float, a: argparse.Namespace, device: torch.device) -> dict:
    """Median seconds of one AdamW step in ``mode`` over ``gb`` of parameters, and the GPU's peak above them."""
    params = _params(gb, a.tensor_mb, device)
    base = torch.cuda.memory_allocated() if device.type == "cuda" else 0  # the parameters and their gradients
    optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.01)
    limit = int(a.chunk_mb * 2**20)

    def step(opt: torch.optim.Optimizer) -> None:
        if mode == "resident":
            opt.step()
        elif mode == FRESH:
            kept, hook_v.to_host = hook_v.to_host, lambda value, home: value.to("cpu", non_blocking=True)
            try:
                hook_v.streamed_step(opt, opt.step, limit, overlap=False)
            finally:
                hook_v.to_host = kept
        else:
            hook_v.streamed_step(opt, opt.step, limit, overlap=mode == "overlapped")
        if device.type == "cuda":
            torch.cuda.synchronize()

    step(optimizer)  # creates the moments (and, streamed, puts them in pinned host memory)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, rss_before = [], rss_gb()
    for _ in range(a.repeats):
        start = time.perf_counter()
        step(optimizer)
        times.append(time.perf_counter() - start)
    grown = rss_gb() - rss_before  # new host buffers a step would leave behind (none once they are reused)
    peak = (torch.cuda.max_memory_allocated() - base) / 1e9 if device.type == "cuda" else float("nan")
    seconds = statistics.median(times)
    # the moments (as many bytes as the parameters, twice) in and out; on a CPU nothing moves
    moved = gb * 2 * 2 if mode != "resident" and device.type == "cuda" else 0.0
    del optimizer, params
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"mode": mode, "params_gb": gb, "seconds": seconds, "moved_gb_per_s": moved / seconds if moved else None,
            "peak_gb_above_params": peak, "host_gb_grown": grown}


def main(argv: list[str] | None = None) -> int:
    """Print the table (and write it as JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--full-gb", type=float, default=33.6, help="fp32 parameter GB of the full rows (7B: 33.6)")
    parser.add_argument("--side-gb", type=float, default=8.0, help="fp32 parameter GB of the side-by-side rows")
    parser.add_argument("--tensor-mb", type=float, default=900.0)
    parser.add_argument("--chunk-mb", type=float, default=1024.0, help="hook V's R1AQA_OPTIMIZER_STREAM_MB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    a = parser.parse_args(argv)
    device = torch.device(a.device)
    rows = [run(mode, a.side_gb, a, device) for mode in MODES]
    rows += [run(mode, a.full_gb, a, device) for mode in (*MODES[1:], FRESH)]
    print(f"AdamW step on {device.type}, tensors of {a.tensor_mb:.0f} MB, chunks of {a.chunk_mb:.0f} MB; median of "
          f"{a.repeats}; torch {torch.__version__}\n")
    print("| mode | params GB | s a step | moments moved, GB/s | GPU peak above params and grads, GB | "
          "host memory grown over the timed steps, GB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        rate = f"{r['moved_gb_per_s']:.1f}" if r["moved_gb_per_s"] else "-"
        peak = "-" if r["peak_gb_above_params"] != r["peak_gb_above_params"] else f"{r['peak_gb_above_params']:.2f}"
        print(f"| {r['mode']} | {r['params_gb']:.2f} | {r['seconds']:.3f} | {rate} | {peak} | "
              f"{r['host_gb_grown']:.2f} |")
    if a.json:
        a.json.write_text(json.dumps({"device": device.type, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
