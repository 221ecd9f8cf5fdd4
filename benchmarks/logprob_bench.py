"""Hook M side by side: token log-probs of one micro-batch by verl's per-row loop, hook M's chunks, and plain torch.

    python benchmarks/logprob_bench.py [--cases lp-update,lp-ref,7b-update,7b-logprob] [--repeats 3]
                                       [--dtype bf16] [--json out.json]
    python benchmarks/logprob_bench.py --cases toy --repeats 1          # a few seconds on a CPU

Each case is the ``(tokens, vocab)`` logits verl's FSDP engine hands ``logprobs_from_logits`` for one micro-batch
(no remove-padding, so every token of every row, prompt included):
- ``lp-update``: the learning proof's actor update, 64 sequences x ~190 tokens, forward + backward;
- ``lp-ref``: its reference pass, 128 x 190, forward only;
- ``7b-update`` / ``7b-logprob``: R1-AQA's shape on the 7B (333 prompt + 256 response tokens), micro-batches of 4
  (update) and 8 (log-prob), as ``r1aqa_grpo`` sets them.
Methods: ``verl-loop`` is ``verl.utils.torch_functional.logprobs_from_logits_v2``, what verl 0.9.1 runs without
flash-attn; ``chunked`` is hook M; ``torch`` is ``log_softmax`` + ``gather`` on the whole tensor (the memory-hungry
reference). Median of ``--repeats`` after one warm-up, peak memory above the inputs, and the largest difference
from an fp32 log-softmax.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES: dict[str, tuple[int, int, bool]] = {  # name: (rows, vocab, backward)
    "lp-update": (64 * 190, 151680, True),
    "lp-ref": (128 * 190, 151680, False),
    "7b-update": (4 * (333 + 256), 156032, True),
    "7b-logprob": (8 * (333 + 256), 156032, False),
    "toy": (96, 1000, True),
}


def methods() -> dict[str, Callable[[Any, Any], Any]]:
    """The implementations to compare; verl's loop only where verl is installed."""
    import torch

    from r1aqa_plugin.models.qwen2_audio.token_logprobs import token_logprobs

    out: dict[str, Callable[[Any, Any], Any]] = {}
    try:
        from verl.utils.torch_functional import logprobs_from_logits_v2

        out["verl-loop"] = logprobs_from_logits_v2
    except ImportError:
        print("verl not installed: verl-loop left out", file=sys.stderr)
    out["chunked"] = token_logprobs
    out["torch"] = lambda lg, lb: torch.log_softmax(lg, dim=-1).gather(-1, lb.unsqueeze(-1)).squeeze(-1)
    return out


def run_case(name: str, repeats: int, dtype: str, device: str) -> list[dict[str, Any]]:
    """Time every method on one case; one row per method."""
    import torch

    rows, vocab, backward = CASES[name]
    g = torch.Generator(device=device).manual_seed(0)
    logits = (4 * torch.randn(rows, vocab, generator=g, device=device)).to(getattr(torch, {"bf16": "bfloat16",
                                                                                           "fp32": "float32"}[dtype]))
    labels = torch.randint(0, vocab, (rows,), generator=g, device=device)
    exact = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    cuda = device.startswith("cuda")
    results = []
    for method, fn in methods().items():
        times, diff = [], 0.0
        for i in range(repeats + 1):
            x = logits.detach().requires_grad_(backward)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            if backward:
                out = fn(x, labels)
                out.float().sum().backward()
            else:
                with torch.no_grad():
                    out = fn(x, labels)
            if cuda:
                torch.cuda.synchronize()
            if i:  # the first call warms up kernels and the allocator
                times.append(time.perf_counter() - t0)
            diff = float((out.detach().float() - exact).abs().max())
            peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else float("nan")
            del out, x
        results.append({"case": name, "rows": rows, "vocab": vocab, "backward": backward, "method": method,
                        "ms": 1e3 * statistics.median(times), "peak_gib": peak, "max_abs_diff": diff})
    loop = next((r["ms"] for r in results if r["method"] == "verl-loop"), None)
    for r in results:
        r["speedup_vs_loop"] = loop / r["ms"] if loop else None
    return results


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of all cases."""
    lines = ["| case | tokens x vocab | pass | method | ms | x verl-loop | peak GiB | max abs diff vs fp32 |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        speed = f"{r['speedup_vs_loop']:.1f}" if r["speedup_vs_loop"] else "-"
        lines.append(f"| {r['case']} | {r['rows']:,} x {r['vocab']:,} | {'fwd+bwd' if r['backward'] else 'fwd'} | "
                     f"{r['method']} | {r['ms']:.1f} | {speed} | {r['peak_gib']:.2f} | {r['max_abs_diff']:.2e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: run the cases, print the table."""
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="lp-update,lp-ref,7b-update,7b-logprob")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    unknown = [c for c in a.cases.split(",") if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = [r for case in a.cases.split(",") for r in run_case(case, a.repeats, a.dtype, device)]
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; logits {a.dtype}")
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
