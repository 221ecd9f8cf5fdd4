"""The official MMAU answer-matching rule (Sakshi113/MMAU evaluation.py ``string_match``), and it as a reward.

A prediction is correct iff it contains every word token of the answer and no token that only wrong choices
have. Tokens are the ``\\b\\w+\\b`` matches of the lower-cased text, as sets. Choices whose token set equals the
answer's (duplicates, permutations of the same words) contribute nothing, so any of them also scores correct.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from r1aqa_plugin.rewards.answer import extract_lenient, extract_strict
from r1aqa_plugin.rewards.registry import register_reward, require_choices

_WORD = re.compile(r"\b\w+\b")

Extraction = Literal["lenient", "strict", "raw"]


def tokenize(text: str) -> set[str]:
    """The official tokenizer: the set of ``\\b\\w+\\b`` matches of ``text.lower()``."""
    return set(_WORD.findall(text.lower()))


def string_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """The official MMAU rule: every answer token in the prediction, no token exclusive to other choices."""
    prediction_tokens = tokenize(prediction)
    if not prediction_tokens:
        return False
    answer_tokens = tokenize(answer)
    incorrect_tokens: set[str] = set()
    for choice in choices:
        choice_tokens = tokenize(choice)
        if choice_tokens != answer_tokens:
            incorrect_tokens |= choice_tokens - answer_tokens
    return answer_tokens <= prediction_tokens and prediction_tokens.isdisjoint(incorrect_tokens)


def extract(response: str, how: Extraction) -> str:
    """The text to match: R1-AQA's lenient extraction, the strict last ``<answer>`` ("" if none), or all of it."""
    if how == "lenient":
        return extract_lenient(response)
    if how == "strict":
        return extract_strict(response) or ""
    if how == "raw":
        return response
    raise ValueError(f"unknown answer extraction {how!r}; use 'lenient', 'strict' or 'raw'")


@register_reward("mmau_match")
def mmau_match(
    response: str, ground_truth: str, choices: Sequence[str] | None, *, extraction: Extraction = "lenient"
) -> float:
    """1.0 iff the official MMAU string_match accepts the extracted answer (R1-AQA's eval pipeline by default)."""
    options = require_choices("mmau_match", choices)
    return 1.0 if string_match(ground_truth, extract(response, extraction), options) else 0.0
