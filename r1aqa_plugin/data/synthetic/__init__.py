"""``synthetic-aqa``: audio multiple-choice questions generated offline, answerable only by listening.

Every row is a pure function of (seed, row number, task list, clip length): row ``i`` asks task
``cycle[i % len(cycle)]``, where the cycle lists the chosen tasks in registry order, each as many times as its
weight (``--tasks beep_count:2,instrument``; weight 1 by default, so the cycle is the task list); that task's
``k``-th row takes its label (the correct option) and the answer's position among the choices from per-block
shuffles, so both are balanced to within one per task; everything else comes from a generator seeded with
``(seed, i)``. Rows are therefore identical whatever the worker count, ``--limit`` or the machine, and a family
that cannot run here (no espeak-ng, no soundfont) only removes its own rows, each counted in the report.

Families and data_source: ``synthetic-aqa/sound`` (numpy only: beep count, pitch/duration/loudness order),
``synthetic-aqa/music`` (tinysoundfont: instrument, major/minor chord), ``synthetic-aqa/speech`` (espeak-ng:
spoken digit, language).
"""

from __future__ import annotations

import functools
import multiprocessing
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from r1aqa_plugin.audio import encode_wav
from r1aqa_plugin.data.records import BuildError, BuildReport, make_record
from r1aqa_plugin.data.registry import arg, register_dataset
from r1aqa_plugin.data.synthetic import music, sound, speech  # noqa: F401  (registers the tasks)
from r1aqa_plugin.data.synthetic.tasks import FAMILIES, TASKS, Task, ordered_tasks

GENERATOR_VERSION = "1"  # bump when a renderer changes what a given seed produces
MAX_SIZE = 50_000
MIN_CLIP_SECONDS = 2.0
MAX_WEIGHT = 16
EVERY_OPTION = sys.maxsize  # --choices all: more than any task has, so Plan.n_choices caps it at the task's options
UNAVAILABLE = {"sound": lambda: None, "music": music.unavailable_reason, "speech": speech.unavailable_reason}


def task_cycle(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Task names in registry order, each repeated by its weight (``name:weight``; a family's weight is each task's)."""
    weights: dict[str, int] = {}
    for item in [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]:
        name, _, weight_text = item.partition(":")
        name = name.strip()
        weight = _parse_weight(item, weight_text) if weight_text else 1
        if name == "all":
            names = list(TASKS)
        elif name in FAMILIES:
            names = [t.name for t in TASKS.values() if t.family == name]
        elif name in TASKS:
            names = [name]
        else:
            known = ", ".join(t.name for t in ordered_tasks())
            raise BuildError(f"unknown synthetic task {name!r}; use all, {', '.join(FAMILIES)} or one of {known}")
        for n in names:
            if weights.get(n, weight) != weight:
                raise BuildError(f"--tasks gives {n!r} two weights ({weights[n]} and {weight} in {item!r})")
            weights[n] = weight
    if not weights:
        raise BuildError("no synthetic task selected (--tasks is empty)")
    return tuple(n for t in ordered_tasks() if t.name in weights for n in [t.name] * weights[t.name])


def _parse_weight(item: str, text: str) -> int:
    try:
        weight = int(text)
    except ValueError:
        weight = 0
    if not 1 <= weight <= MAX_WEIGHT:
        raise BuildError(f"--tasks {item!r}: a weight must be a whole number from 1 to {MAX_WEIGHT}, got {text!r}")
    return weight


def parse_choices(value: str | int | None) -> int | None:
    """``--choices``: 'task' or None -> each task's own count; 'all' -> every option; a number >= 2 -> that many."""
    if value is None or value == "task":
        return None
    if value == "all":
        return EVERY_OPTION
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BuildError(f"--choices must be 'task', 'all' or a number >= 2, got {value!r}") from None
    if n < 2:
        raise BuildError(f"--choices must be 'task', 'all' or a number >= 2, got {value!r}")
    return n


def _block_pick(seed: int, task_index: int, purpose: int, k: int, n: int) -> int:
    """Entry ``k % n`` of the shuffle of range(n) for block ``k // n``: balanced to within one, deterministic."""
    perm = np.random.default_rng([seed, task_index, purpose, k // n]).permutation(n)
    return int(perm[k % n])


@dataclass(frozen=True)
class Plan:
    """Everything that decides the rows (picklable, for worker processes)."""

    seed: int
    cycle: tuple[str, ...]  # task names in registry order, each repeated by its weight
    clip_seconds: float
    split: str
    choices: int | None = None  # choices listed per row: None = each task's own n_choices, else capped at its options

    def task_of(self, i: int) -> Task:
        """The task row ``i`` asks."""
        return TASKS[self.cycle[i % len(self.cycle)]]

    def ordinal(self, i: int) -> int:
        """How many rows before row ``i`` ask its task: the ``k`` that balances labels and positions per task."""
        cycle, at = self.cycle, i % len(self.cycle)
        name = cycle[at]
        return (i // len(cycle)) * cycle.count(name) + cycle[:at].count(name)

    def n_choices(self, task: Task) -> int:
        """How many choices this plan lists for ``task``."""
        return task.n_choices if self.choices is None else min(self.choices, len(task.options))


def make_row(plan: Plan, i: int) -> dict[str, Any]:
    """Render row ``i`` of the plan."""
    task = plan.task_of(i)
    # keyed by the task's place among all tasks, not in --tasks: its label/position sequence is its own
    t = [x.name for x in ordered_tasks()].index(task.name)
    k = plan.ordinal(i)
    label = _block_pick(plan.seed, t, 0, k, len(task.options))
    n_choices = plan.n_choices(task)
    position = _block_pick(plan.seed, t, 1, k, n_choices)
    rng = np.random.default_rng([plan.seed, i])
    try:
        rendered = task.render(rng, label, plan.clip_seconds)
    except Exception as exc:  # name the row: a renderer failing deep in a worker is otherwise anonymous
        raise BuildError(f"synthetic-aqa row {i} ({task.family}/{task.name}): {type(exc).__name__}: {exc}") from exc
    answer = task.options[label]
    others = [o for o in task.options if o != answer]
    distractors = [others[j] for j in rng.permutation(len(others))[: n_choices - 1]]
    choices = distractors[:position] + [answer] + distractors[position:]
    return make_record(
        data_source=f"synthetic-aqa/{task.family}",
        question=rendered.question,
        choices=choices,
        answer=answer,
        audios=[{"path": None, "bytes": encode_wav(rendered.wave)}],
        id=f"synthetic-aqa-s{plan.seed}-{i:06d}",
        index=i,
        source_dataset="synthetic-aqa",
        task=task.family,
        sub_category=task.name,
        difficulty=rendered.difficulty,
        split=plan.split,
        version=GENERATOR_VERSION,
        meta={**rendered.params, "clip_seconds": plan.clip_seconds, "seed": plan.seed},
    )


def _rows(plan: Plan, indices: list[int], workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        yield from (make_row(plan, i) for i in indices)
        return
    # fork: workers inherit the registered tasks; imap keeps the row order, so output doesn't depend on workers
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(functools.partial(make_row, plan), indices, chunksize=8)


TASK_HELP = "; ".join(f"{t.family}/{t.name}: {t.description}" for t in ordered_tasks())


@register_dataset(
    "synthetic-aqa",
    description="offline, seeded audio MCQs answerable only by listening (sound: numpy; music; speech)",
    arguments=(
        arg("--size", type=int, help=f"number of rows to generate (at most {MAX_SIZE})"),
        arg("--seed", type=int, help="generator seed; the same seed gives the same rows"),
        arg("--tasks", help=f"comma-separated: all, a family ({', '.join(FAMILIES)}) or task names, each with an "
            f"optional :WEIGHT (1-{MAX_WEIGHT}; beep_count:2,instrument gives beep count two rows in three). {TASK_HELP}"),
        arg("--clip-seconds", type=float, help=f"seconds per clip (at least {MIN_CLIP_SECONDS}; R1-AQA-shaped: 10)"),
        arg("--split", help="split name stored in extra_info"),
        arg("--workers", type=int, help="processes rendering rows (output is identical for any value)"),
        arg("--choices", help="choices listed per question: 'task' (each task's own: 4 or 2), 'all' (every option "
            "of the task, so an answer chosen without hearing scores chance on the balanced labels) or a number (capped "
            "per task)"),
    ),
)
def build_synthetic(
    report: BuildReport,
    *,
    size: int = 1000,
    seed: int = 0,
    tasks: str | Sequence[str] = "all",
    clip_seconds: float = 4.0,
    split: str = "train",
    workers: int = 1,
    choices: str | int = "task",
) -> Iterator[dict[str, Any]]:
    """Yield ``size`` synthetic rows, minus those of families that cannot be rendered here (counted as skipped)."""
    if not 1 <= size <= MAX_SIZE:
        raise BuildError(f"--size must be between 1 and {MAX_SIZE}, got {size}")
    if clip_seconds < MIN_CLIP_SECONDS:
        raise BuildError(f"--clip-seconds must be at least {MIN_CLIP_SECONDS}, got {clip_seconds}")
    cycle = task_cycle(tasks)
    plan = Plan(seed, cycle, float(clip_seconds), split, parse_choices(choices))
    reasons = {family: UNAVAILABLE[family]() for family in {TASKS[n].family for n in cycle}}
    for family, reason in sorted(reasons.items()):
        if reason:
            report.note(f"{family} tasks skipped: {reason}")
    indices = [i for i in range(size) if not reasons[plan.task_of(i).family]]
    report.expected_rows = len(indices)
    rows = _rows(plan, indices, workers)
    for i in range(size):
        task = plan.task_of(i)
        reason = reasons[task.family]
        if reason:
            report.skip(f"{task.family} family unavailable: {reason}", f"row {i} ({task.name})")
            continue
        yield next(rows)
