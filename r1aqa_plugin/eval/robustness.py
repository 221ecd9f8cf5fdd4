"""Robustness probes: choice-order shuffling (position bias) and silenced audio (how much needs the audio).

MMAU test-mini puts the correct answer first in 39.5% of items, so a model that prefers the first option
scores above what it knows; re-asking with the choices permuted shows it. Silencing the audio (zeros of the
same length, so prompt length and padding are unchanged) shows how much of the score the text alone earns.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from r1aqa_plugin.eval.scoring import Tally
from r1aqa_plugin.rewards.answer import extract_lenient, resolve_choice
from r1aqa_plugin.rewards.mmau import string_match

UNRESOLVED = "none"


def shuffle_choices(items: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Copies of ``items`` with each item's choices permuted (seeded per item id, so runs are reproducible)."""
    out = []
    for item in items:
        choices = list(item["choices"])
        random.Random(f"{seed}:{item['id']}").shuffle(choices)
        out.append({**item, "choices": choices})
    return out


def silence(audio: np.ndarray) -> np.ndarray:
    """Zeros of the clip's length."""
    return np.zeros_like(audio)


@dataclass
class PositionBias:
    """Accuracy by the correct answer's position, and where the model's answers point."""

    accuracy_by_answer_position: dict[int, Tally]
    predicted_positions: Counter  # choice index, or UNRESOLVED when the answer names no choice


def position_bias(items: Sequence[dict[str, Any]], raw_outputs: Sequence[str]) -> PositionBias:
    """Position statistics of one run (R1-AQA's lenient extraction, MMAU's match rule)."""
    by_position: dict[int, Tally] = {}
    predicted: Counter = Counter()
    for item, raw in zip(items, raw_outputs):
        choices = item["choices"]
        answer = extract_lenient(raw)
        tally = by_position.setdefault(choices.index(item["answer"]), Tally())
        tally.total += 1
        tally.correct += int(string_match(item["answer"], answer, choices))
        index = resolve_choice(answer, choices)
        predicted[UNRESOLVED if index is None else index] += 1
    return PositionBias(dict(sorted(by_position.items())), predicted)


def merge_bias(biases: Sequence[PositionBias]) -> PositionBias:
    """Position statistics pooled over several runs."""
    by_position: dict[int, Tally] = {}
    predicted: Counter = Counter()
    for bias in biases:
        for position, tally in bias.accuracy_by_answer_position.items():
            into = by_position.setdefault(position, Tally())
            into.correct += tally.correct
            into.total += tally.total
        predicted.update(bias.predicted_positions)
    return PositionBias(dict(sorted(by_position.items())), predicted)
