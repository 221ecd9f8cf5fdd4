"""R1-AQA's rewards, scored exactly as xiaomi-research/r1-aqa src/utils/rewards.py scores them.

accuracy: (optionally math-verify first) then the first single-line ``<answer>`` body, or the whole output when
there is none, stripped, must equal the ground truth exactly (case-sensitive). format: the whole completion is
one ``<answer>…</answer>`` (``re.fullmatch``, DOTALL), so any text around the tags, even a newline, fails it.
Weights are 1 and 1 in R1-AQA (trl's reward_weights=None), so the maximum total reward is 2.
"""

from __future__ import annotations

from collections.abc import Sequence

from r1aqa_plugin.rewards.answer import extract_lenient, is_answer_format, is_think_answer_format, r1aqa_answer_span
from r1aqa_plugin.rewards.registry import register_reward


def _math_verify_equal(response: str, ground_truth: str) -> bool:
    """R1-AQA's first check: math_verify.verify(parse(response), parse(ground_truth)) > 0, exceptions ignored."""
    try:
        from math_verify import parse, verify
    except ImportError as exc:
        raise ImportError("r1aqa_accuracy(math_verify=True) needs `pip install math-verify==0.7.0`") from exc
    try:
        return float(verify(parse(response), parse(ground_truth))) > 0
    except Exception:  # R1-AQA swallows every math_verify failure and falls through to string matching
        return False


@register_reward("r1aqa_accuracy")
def r1aqa_accuracy(
    response: str, ground_truth: str, choices: Sequence[str] | None, *, math_verify: bool = False
) -> float:
    """1.0 iff R1-AQA's accuracy_reward gives 1 (math_verify off by default: it credits numbers found anywhere)."""
    if math_verify and _math_verify_equal(response, ground_truth):
        return 1.0
    # R1-AQA's solution string is "<answer>{choice}</answer>"; a bare ground truth is used stripped, as it does.
    truth_span = r1aqa_answer_span(ground_truth)
    truth = (ground_truth if truth_span is None else truth_span).strip()
    return 1.0 if extract_lenient(response) == truth else 0.0


@register_reward("r1aqa_format")
def r1aqa_format(response: str, ground_truth: str, choices: Sequence[str] | None) -> float:
    """1.0 iff the completion is exactly ``<answer>…</answer>`` (R1-AQA's format_reward)."""
    return 1.0 if is_answer_format(response) else 0.0


@register_reward("r1aqa_think_format")
def r1aqa_think_format(response: str, ground_truth: str, choices: Sequence[str] | None) -> float:
    """1.0 iff the completion is exactly ``<think>…</think>``, whitespace, ``<answer>…</answer>`` (R1-AQA think)."""
    return 1.0 if is_think_answer_format(response) else 0.0
