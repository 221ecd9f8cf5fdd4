"""A think-length budget reward, as AudSemThinker's max_length_constraint_reward (after L1, arXiv 2503.04697).

n = the number of whitespace-separated words in the first ``<think>…</think>`` body, T = ``target_words``:

    budget mode (default):   r = clip(alpha * (T - n) + delta, 0, 1)
    encourage_target, n <= T: r = clip(1 - alpha * (T - n) + delta, 0, 1)   (over T: the budget formula)

With AudSemThinker's defaults (T=100, alpha=0.1, delta=0.5): n <= 95 scores 1, n = 100 scores 0.5, n >= 105
scores 0; with encourage_target, n = 90 scores 0.5 and n <= 85 scores 0. One deliberate difference: a
completion without a think block scores 0 here (AudSemThinker counts it as 0 words, i.e. full reward), so that
the reward cannot be earned by not thinking at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from r1aqa_plugin.rewards.answer import first_think_span
from r1aqa_plugin.rewards.registry import register_reward


def think_words(response: str) -> int | None:
    """Word count of the first think block, or None when there is none."""
    span = first_think_span(response)
    return None if span is None else len(span.split())


def length_factor(n: int, target: int, alpha: float, delta: float, encourage_target: bool) -> float:
    """The L1 / AudSemThinker length factor for n words against a target of ``target`` words."""
    if encourage_target and n <= target:
        value = 1.0 - alpha * (target - n) + delta
    else:
        value = alpha * (target - n) + delta
    return min(1.0, max(0.0, value))


@register_reward("think_length")
def think_length(
    response: str,
    ground_truth: str,
    choices: Sequence[str] | None,
    *,
    target_words: int = 100,
    alpha: float = 0.1,
    delta: float = 0.5,
    encourage_target: bool = False,
) -> float:
    """Length factor of the think block's word count against ``target_words``; 0 without a think block."""
    n = think_words(response)
    return 0.0 if n is None else length_factor(n, target_words, alpha, delta, encourage_target)
