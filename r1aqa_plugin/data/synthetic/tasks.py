"""What a synthetic task is: a fixed question set, a fixed option list, and a renderer from label to audio.

The renderer gets the label (the index of the correct option) and must encode it only in the waveform: the
question text it returns may vary (e.g. "higher" / "lower"), but only independently of the label, so no
question text is more likely under one answer than another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Rendered:
    """One rendered question: its text and its 16 kHz float32 waveform (exactly the clip length)."""

    question: str
    wave: np.ndarray
    difficulty: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


# (rng, label, clip_seconds) -> Rendered
Renderer = Callable[[np.random.Generator, int, float], Rendered]


@dataclass(frozen=True)
class Task:
    """A synthetic question type; ``family`` is sound | music | speech (the data_source suffix)."""

    name: str
    family: str
    options: tuple[str, ...]
    n_choices: int
    render: Renderer
    description: str


FAMILIES = ("sound", "music", "speech")
TASKS: dict[str, Task] = {}


def register_task(
    name: str, *, family: str, options: tuple[str, ...], n_choices: int, description: str
) -> Callable[[Renderer], Renderer]:
    """Register a renderer as a synthetic task."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; use one of {FAMILIES}")
    if not 2 <= n_choices <= len(options):
        raise ValueError(f"task {name!r}: n_choices={n_choices} must be between 2 and {len(options)} options")

    def wrap(render: Renderer) -> Renderer:
        if name in TASKS:
            raise ValueError(f"synthetic task {name!r} is already registered")
        TASKS[name] = Task(name, family, options, n_choices, render, description)
        return render

    return wrap


def ordered_tasks() -> list[Task]:
    """Registered tasks, sound first, then music, then speech (in registration order within a family)."""
    return sorted(TASKS.values(), key=lambda t: FAMILIES.index(t.family))
