"""Rewards scored per second on one core, for each registered reward and for verl's compute_score.

    python benchmarks/reward_throughput.py [--seconds 0.5]

Inputs: typical completions (short tagged answer, think + answer, untagged sentence) and adversarial ones
(1 MB strings of tags). The process is pinned to one core where the OS allows it; numbers are completions per
second (higher is better), measured by repeating each call for about --seconds.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from r1aqa_plugin.rewards import REWARDS, compute_score

MB = 1_048_576
CHOICES = ["a dog barking", "a cat meowing", "a bird singing", "rain on a roof"]
TRUTH = CHOICES[0]

INPUTS: dict[str, str] = {
    "answer (typical)": f"<answer>{TRUTH}</answer>",
    "think+answer (typical)": "<think>" + "the sound is low and rhythmic " * 10 + f"</think>\n<answer>{TRUTH}</answer>",
    "untagged sentence": f"I think the answer is {TRUTH}, because of the barking.",
    "1 MB of <answer>": "<answer>" * (MB // 8),
    "1 MB <answer>x lines": "<answer>x\n" * (MB // 10),
    "1 MB nested tags": "<answer>" * (MB // 16) + "</answer>" * (MB // 18),
    "1 MB </think> <answer> runs": "<think>" + "</think> <answer>" * (MB // 17),
    "1 MB words": "dog " * (MB // 4),
}


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn``, repeated for about ``seconds``."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed


def _fmt(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}"


def main() -> None:
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time spent per cell (default 0.5)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    every = {name: 1.0 for name in REWARDS}
    scorers: dict[str, Callable[[str], object]] = {
        name: (lambda text, fn=fn: fn(text, TRUTH, CHOICES)) for name, fn in sorted(REWARDS.items())
    }
    scorers["compute_score (R1-AQA default)"] = lambda text: compute_score("b", text, TRUTH, {"choices": CHOICES})
    scorers["compute_score (all rewards)"] = lambda text: compute_score("b", text, TRUTH, {"choices": CHOICES},
                                                                         rewards=every)
    columns = list(INPUTS)
    print("completions scored per second, one core (higher is better)\n")
    print("| reward | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, scorer in scorers.items():
        cells = [_fmt(_rate(lambda text=INPUTS[col]: scorer(text), args.seconds)) for col in columns]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
