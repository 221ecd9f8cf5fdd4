"""MMAU scoring as Sakshi113/MMAU evaluation.py computes it, with every item required to have a prediction.

The official script counts per task (sound, music, speech), per difficulty (easy, hard, medium), per
sub-category (in order of first appearance; items without the key are left out of that table only) and in
total, and prints ``(correct / total) * 100`` with two decimals. Two deliberate differences:
- an item without a prediction raises MissingPredictionError naming it (the official script silently skips
  it, shrinking the denominator);
- a task or difficulty outside the official lists (non-MMAU data) gets its own row instead of a KeyError.

Three modes are scored side by side on the same items:
- official: the prediction field as written (``model_output``, else ``model_prediction``), as evaluation.py;
- lenient: R1-AQA's extraction (first single-line ``<answer>`` body, else the raw output), what R1-AQA reports;
- strict: the last ``<answer>`` body (DOTALL); an output without one is wrong ("unparseable").
Lenient and strict read the raw generation (``model_output_raw`` when present, else the prediction field).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from r1aqa_plugin.rewards.answer import extract_lenient, extract_strict
from r1aqa_plugin.rewards.mmau import string_match

OFFICIAL_TASKS = ("sound", "music", "speech")
OFFICIAL_DIFFICULTIES = ("easy", "hard", "medium")  # evaluation.py's order
PREDICTION_KEYS = ("model_output", "model_prediction")  # ours / R1-AQA's test_mmau.py
RAW_KEY = "model_output_raw"
MODES = ("official", "lenient", "strict")


class MissingPredictionError(ValueError):
    """Some items have no prediction; the message names them."""


@dataclass
class Tally:
    """Correct and total counts of one group."""

    correct: int = 0
    total: int = 0

    @property
    def percent(self) -> float:
        """Accuracy in percent, exactly as evaluation.py computes it (0 for an empty group)."""
        return (self.correct / self.total) * 100 if self.total > 0 else 0


@dataclass
class ModeScores:
    """One mode's per-item results and its official breakdown."""

    correct: list[bool]
    total: Tally
    by_task: dict[str, Tally]
    by_difficulty: dict[str, Tally]
    by_subcategory: dict[str, Tally]


@dataclass
class Scores:
    """All modes on one list of items, plus the count of outputs without a complete ``<answer>`` tag."""

    n_items: int
    unparseable: int
    modes: dict[str, ModeScores] = field(default_factory=dict)


def prediction_of(item: Mapping[str, Any]) -> str | None:
    """The item's prediction field (``model_output``, else ``model_prediction``), or None."""
    for key in PREDICTION_KEYS:
        if key in item:
            return item[key]
    return None


def _check_items(items: Sequence[Mapping[str, Any]]) -> None:
    if not items:
        raise ValueError("no items to score")
    missing = [
        str(item.get("id", f"#{i}")) for i, item in enumerate(items) if not any(k in item for k in PREDICTION_KEYS)
    ]
    if missing:
        shown = ", ".join(missing[:20]) + (f", ... ({len(missing) - 20} more)" if len(missing) > 20 else "")
        raise MissingPredictionError(
            f"{len(missing)} of {len(items)} items have no prediction (key {' or '.join(PREDICTION_KEYS)}): {shown}"
        )
    for i, item in enumerate(items):
        for key in (*PREDICTION_KEYS, RAW_KEY):
            if key in item and not isinstance(item[key], str):
                raise TypeError(f"item {item.get('id', f'#{i}')}: {key} must be a str, got {type(item[key]).__name__}")
        for key in ("answer", "choices", "task"):
            if key not in item:
                raise KeyError(f"item {item.get('id', f'#{i}')} has no {key!r} (MMAU items need answer, choices, task)")


def _breakdown(items: Sequence[Mapping[str, Any]], correct: list[bool]) -> ModeScores:
    total = Tally()
    by_task = {task: Tally() for task in OFFICIAL_TASKS}
    by_difficulty = {difficulty: Tally() for difficulty in OFFICIAL_DIFFICULTIES}
    by_subcategory: dict[str, Tally] = {}
    for item, ok in zip(items, correct):
        groups = [total, by_task.setdefault(str(item["task"]), Tally())]
        groups.append(by_difficulty.setdefault(str(item.get("difficulty")), Tally()))
        subcategory = item.get("sub-category")
        if subcategory is not None:
            groups.append(by_subcategory.setdefault(subcategory, Tally()))
        for tally in groups:
            tally.correct += int(ok)
            tally.total += 1
    return ModeScores(correct, total, by_task, by_difficulty, by_subcategory)


def score_items(items: Sequence[Mapping[str, Any]]) -> Scores:
    """Score MMAU-format items (each with a prediction) in the official, lenient and strict modes."""
    _check_items(items)
    raws = [item.get(RAW_KEY, prediction_of(item)) for item in items]
    strict = [extract_strict(raw) for raw in raws]
    texts = {
        "official": [prediction_of(item) for item in items],
        "lenient": [extract_lenient(raw) for raw in raws],
        "strict": [s if s is not None else "" for s in strict],
    }
    scores = Scores(n_items=len(items), unparseable=sum(s is None for s in strict))
    for mode in MODES:
        correct = [string_match(item["answer"], text, item["choices"]) for item, text in zip(items, texts[mode])]
        scores.modes[mode] = _breakdown(items, correct)
    return scores


def official_text(mode: ModeScores) -> str:
    """The result block evaluation.py prints (tqdm bar left out; ``No prediction count`` is always 0 here)."""
    rule = "*" * 30
    lines = [rule, "Task-wise Accuracy:"]
    lines += [f"{k} : {t.percent:.2f}% over {t.total} samples" for k, t in mode.by_task.items()]
    lines += [rule, "Difficulty-wise Accuracy:"]
    lines += [f"{k} : {t.percent:.2f}% over {t.total} samples" for k, t in mode.by_difficulty.items()]
    lines += [rule, "Sub-category-wise Accuracy:"]
    lines += [f"{k} : {t.percent:.2f}% over {t.total} samples" for k, t in mode.by_subcategory.items()]
    lines += [rule, f"Total Accuracy: {mode.total.percent:.2f}% over {mode.total.total} samples", rule]
    lines.append("No prediction count: 0")
    return "\n".join(lines)
