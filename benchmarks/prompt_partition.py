"""Hook AB across data-parallel ranks: the tokens a GRPO step's update runs when verl balances rows over the ranks
(its default) and when hook J hands each rank whole prompts (with hook AB on), and what that costs in balance.

    python benchmarks/prompt_partition.py [--gpus 1,2,4,8] [--prompts 16] [--n 8] [--prompt-tokens 320-340]
                                          [--response-tokens 60-256] [--trials 200] [--seed 0] [--json out.json]

Each trial draws R1-AQA's batch (16 prompts x 8 samples; prompt and response lengths uniform in the given ranges),
partitions it as verl 0.9.1's v1 trainer does (``get_seqlen_balanced_partitions`` over each row's
``calculate_workload``) and as hook J does (``whole_prompts_per_rank``), and counts the tokens hook AB leaves when
each rank's share is one micro-batch: a prompt once per rank that holds any of its rows, plus every row's own
tokens. Balance is the largest rank's workload over the mean (1.0 = even). CPU only, seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any


def span(text: str) -> tuple[int, int]:
    """``"320-340"`` -> (320, 340)."""
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def packed_tokens(parts: list[list[int]], uids: list[str], lengths: list[int], prompt: dict[str, int]) -> int:
    """Tokens of every rank's share with each prompt once per rank (hook AB's packing)."""
    total = 0
    for part in parts:
        seen: set[str] = set()
        for i in part:
            total += lengths[i] - (prompt[uids[i]] if uids[i] in seen else 0)
            seen.add(uids[i])
    return total


def trial(gpus: int, a: argparse.Namespace, rng: Any) -> dict[str, float]:
    """One batch: tokens separate, packed under verl's row balance and under whole prompts; both balances."""
    import torch
    from verl.utils.seqlen_balancing import calculate_workload, get_seqlen_balanced_partitions

    from r1aqa_plugin.models.qwen2_audio.verl_hooks import prompt_of, whole_prompts_per_rank

    keys, lengths, prompt = [], [], {}
    for p in range(a.prompts):
        prompt[f"p{p}"] = int(rng.integers(a.prompt_tokens[0], a.prompt_tokens[1] + 1))
        for s in range(a.n):
            keys.append(f"p{p}_{s}_0")
            lengths.append(prompt[f"p{p}"] + int(rng.integers(a.response_tokens[0], a.response_tokens[1] + 1)))
    uids = [prompt_of(k) for k in keys]
    work = calculate_workload(torch.tensor(lengths)).tolist()
    rows = get_seqlen_balanced_partitions(work, k_partitions=gpus, equal_size=True)
    order, why_not = whole_prompts_per_rank(keys, lengths, gpus)
    if not order:
        raise SystemExit(f"{gpus} GPUs: {why_not}")
    size = len(order) // gpus
    whole = [order[r * size:(r + 1) * size] for r in range(gpus)]

    def balance(parts: list[list[int]]) -> float:
        loads = [sum(work[i] for i in part) for part in parts]
        return max(loads) / statistics.mean(loads)

    return {"separate": sum(lengths), "packed_rows": packed_tokens(rows, uids, lengths, prompt),
            "packed_whole": packed_tokens(whole, uids, lengths, prompt), "balance_rows": balance(rows),
            "balance_whole": balance(whole),
            "prompts_per_rank_rows": statistics.mean(len({uids[i] for i in part}) for part in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="1,2,4,8", help="data-parallel ranks, comma-separated")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8, help="samples a prompt")
    ap.add_argument("--prompt-tokens", type=span, default=(320, 340), help="LOW-HIGH (R1-AQA, 10 s clips: ~333)")
    ap.add_argument("--response-tokens", type=span, default=(60, 256), help="LOW-HIGH")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    import numpy as np

    rng = np.random.default_rng(a.seed)
    rows_out = []
    for gpus in [int(g) for g in a.gpus.split(",")]:
        runs = [trial(gpus, a, rng) for _ in range(a.trials)]
        row = {"gpus": gpus, **{k: statistics.mean(r[k] for r in runs) for k in runs[0]},
               "balance_whole_worst": max(r["balance_whole"] for r in runs)}
        rows_out.append(row)
    print(f"\nHook AB's tokens per step by how rows meet the ranks: {a.prompts} prompts x {a.n}, prompts "
          f"{a.prompt_tokens[0]}-{a.prompt_tokens[1]} tokens, responses {a.response_tokens[0]}-"
          f"{a.response_tokens[1]}, means of {a.trials} batches\n")
    print("| GPUs | prompts a rank holds rows of (verl) | tokens, separate rows | packed, verl's rows per rank | "
          "packed, whole prompts per rank (hook J) | balance, verl's rows | balance, whole prompts (worst) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows_out:
        print(f"| {r['gpus']} | {r['prompts_per_rank_rows']:.1f} | {r['separate']:,.0f} | {r['packed_rows']:,.0f} "
              f"({r['packed_rows'] / r['separate']:.0%}) | {r['packed_whole']:,.0f} "
              f"({r['packed_whole'] / r['separate']:.0%}) | {r['balance_rows']:.4f} | {r['balance_whole']:.4f} "
              f"({r['balance_whole_worst']:.4f}) |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(a).items() if k != "json"}, "rows": rows_out}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
