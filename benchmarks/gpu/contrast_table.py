"""Rollout-vs-actor agreement per step for a same-audio and a wrong-audio run (tests/test_gpu_grpo.py logs).

    python benchmarks/gpu/contrast_table.py same-audio.log wrong-audio.log

Prints verl's `rollout_corr/log_ppl_abs_diff` and `training/rollout_actor_probs_pearson_corr` side by side and
the ratio of the gaps (issue 3 asks for >= 10x at step 1 and after weight updates).
"""

from __future__ import annotations

import sys
from pathlib import Path

from r1aqa_plugin.verl_log import step_metrics

GAP, CORR, K3 = "rollout_corr/log_ppl_abs_diff", "training/rollout_actor_probs_pearson_corr", "rollout_corr/k3_kl"


def table(same_log: str, wrong_log: str) -> str:
    """A markdown table of the two runs' agreement metrics per step (k3 KL: token level, so it cannot cancel)."""
    same = step_metrics(Path(same_log).read_text(errors="replace"))
    wrong = step_metrics(Path(wrong_log).read_text(errors="replace"))
    lines = ["| step | same: abs log-ppl diff | same: Pearson | same: k3 KL | wrong audio: abs log-ppl diff | "
             "wrong audio: Pearson | wrong audio: k3 KL | gap ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for step in sorted(set(same) | set(wrong)):
        a, b = same.get(step, {}), wrong.get(step, {})
        ratio = b[GAP] / a[GAP] if a.get(GAP) and b.get(GAP) is not None else None
        cells = [a.get(GAP), a.get(CORR), a.get(K3), b.get(GAP), b.get(CORR), b.get(K3), ratio]
        lines.append(f"| {step} | " + " | ".join("-" if c is None else f"{c:.4g}" for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(table(sys.argv[1], sys.argv[2]))
