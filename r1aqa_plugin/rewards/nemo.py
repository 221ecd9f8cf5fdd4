"""NeMo RL's audio-GRPO rewards (nemo_rl/environments/rewards.py): alphanumeric exact match and tag format.

exact_alnum: the body from the first ``<answer>`` to the last ``</answer>`` and the ground truth, each reduced to
its alphanumeric characters (``str.isalnum``, Unicode) and lower-cased, must be equal; no tag scores 0.
nemo_format: 0.25 for a ``<think>…</think>`` anywhere plus 0.75 for an ``<answer>…</answer>`` anywhere.
NeMo RL weighs them 0.8 (exact_alnum) and 0.2 (format).
"""

from __future__ import annotations

from collections.abc import Sequence

from r1aqa_plugin.rewards.answer import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, greedy_answer_span
from r1aqa_plugin.rewards.registry import register_reward


def alnum_lower(text: str) -> str:
    """Keep the alphanumeric characters, lower-cased (NeMo RL's normalisation)."""
    return "".join(c for c in text if c.isalnum()).lower()


def _has_pair(text: str, open_tag: str, close_tag: str) -> bool:
    # re.search(rf"<{tag}>[\s\S]*</{tag}>", text) matches iff a closing tag follows the first opening tag.
    start = text.find(open_tag)
    return start >= 0 and text.find(close_tag, start + len(open_tag)) >= 0


@register_reward("exact_alnum")
def exact_alnum(response: str, ground_truth: str, choices: Sequence[str] | None) -> float:
    """1.0 iff the tagged answer equals the ground truth on lower-cased alphanumerics (NeMo RL)."""
    span = greedy_answer_span(response)
    return 1.0 if span is not None and alnum_lower(span) == alnum_lower(ground_truth) else 0.0


@register_reward("nemo_format")
def nemo_format(response: str, ground_truth: str, choices: Sequence[str] | None) -> float:
    """0.25 for a think block plus 0.75 for an answer block, anywhere in the completion (NeMo RL)."""
    score = 0.25 if _has_pair(response, THINK_OPEN, THINK_CLOSE) else 0.0
    return score + (0.75 if _has_pair(response, ANSWER_OPEN, ANSWER_CLOSE) else 0.0)
