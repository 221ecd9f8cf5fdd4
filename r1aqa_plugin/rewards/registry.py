"""The reward registry: one dict of plain functions, filled by a decorator, looked up by name.

A reward is ``fn(response, ground_truth, choices, **options) -> float``: ``response`` is the decoded completion
(special tokens skipped), ``ground_truth`` the correct choice's text, ``choices`` the options in prompt order
(None where the data has none; rewards that need them raise). Options are keyword-only parameters with
defaults, set per reward from the recipe (see verl_score.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class RewardFn(Protocol):
    """The signature every registered reward has."""

    def __call__(self, response: str, ground_truth: str, choices: Sequence[str] | None, **options: Any) -> float: ...


REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register ``fn`` as the reward called ``name`` (names are unique)."""

    def wrap(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered (by {REWARDS[name].__module__})")
        params = list(inspect.signature(fn).parameters.values())
        if [p.name for p in params[:3]] != ["response", "ground_truth", "choices"] or any(
            p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params[3:]
        ):
            raise TypeError(f"reward {name!r}: expected fn(response, ground_truth, choices, *, options...)")
        REWARDS[name] = fn
        return fn

    return wrap


def get_reward(name: str) -> RewardFn:
    """The reward registered as ``name``; the error lists every registered name."""
    try:
        return REWARDS[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; registered rewards: {sorted(REWARDS)}") from None


def reward_options(name: str) -> dict[str, Any]:
    """The options (keyword-only parameters) reward ``name`` accepts, with their defaults."""
    params = list(inspect.signature(get_reward(name)).parameters.values())[3:]
    return {p.name: p.default for p in params}


def require_choices(name: str, choices: Sequence[str] | None) -> list[str]:
    """The choices as a list of str, or a clear error naming the reward that needs them."""
    if choices is None:
        raise ValueError(
            f"reward {name!r} needs the question's choices: put them into the row's extra_info['choices']"
        )
    out = list(choices)  # parquet hands lists over as numpy arrays
    if not out or not all(isinstance(c, str) for c in out):
        raise ValueError(f"reward {name!r}: choices must be a non-empty list of str, got {out!r}")
    return out

