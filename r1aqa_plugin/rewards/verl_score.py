"""``compute_score``: the one function verl calls, composing registered rewards with the recipe's weights.

Recipe::

    reward:
      custom_reward_function:
        path: pkg://r1aqa_plugin.rewards.verl_score
        name: compute_score
        reward_kwargs:
          rewards: {r1aqa_accuracy: 1.0, r1aqa_format: 1.0}          # R1-AQA (the default)
          # rewards: {exact_alnum: 0.8, nemo_format: 0.2}              # NeMo RL
          # rewards: {r1aqa_accuracy: 1.0, think_length: {weight: 0.5, target_words: 50}}

Each entry is ``name: weight`` or ``name: {weight: w, <option>: value, ...}`` (options are the reward's
keyword-only parameters; an unknown one is an error). The result is verl's dict: ``score`` (the weighted sum),
every component's unweighted value under its own name (so verl logs each), and ``acc``.

``acc`` is the same for every recipe so that validation curves stay comparable: 1.0 iff the official MMAU rule
accepts R1-AQA's extraction of the answer (the first ``<answer>`` body, else the whole output), i.e. what
R1-AQA's test_mmau.py + MMAU evaluation.py report. It needs the choices, so every row's ``extra_info`` must
carry ``choices`` (list[str], prompt order); a row without them raises.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from r1aqa_plugin.rewards.mmau import mmau_match
from r1aqa_plugin.rewards.registry import RewardFn, get_reward, reward_options

DEFAULT_REWARDS: dict[str, float] = {"r1aqa_accuracy": 1.0, "r1aqa_format": 1.0}

# Keyword arguments verl 0.9.1's reward managers add on their own (only with a reward-model router); not ours.
_VERL_SUPPLIED_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})


@dataclass(frozen=True)
class Component:
    """One weighted reward of a composition."""

    name: str
    weight: float
    fn: RewardFn
    options: tuple[tuple[str, Any], ...]

    def __call__(self, response: str, ground_truth: str, choices: Sequence[str] | None) -> float:
        """The component's unweighted value."""
        return float(self.fn(response, ground_truth, choices, **dict(self.options)))


def _plain(value: Any) -> Any:
    """OmegaConf containers (what Hydra passes) to plain dicts, so specs hash and print plainly."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _freeze(spec: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (name, tuple(sorted(entry.items())) if isinstance(entry, dict) else entry) for name, entry in spec.items()
    )


def build_components(rewards: Mapping[str, Any] | None = None) -> tuple[Component, ...]:
    """Parse a ``{name: weight | {weight, **options}}`` spec into components (errors name the bad entry)."""
    spec = _plain(DEFAULT_REWARDS if rewards is None else rewards)
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"rewards must be a non-empty mapping of reward name to weight, got {spec!r}")
    return _build(_freeze(spec))


@functools.lru_cache(maxsize=64)
def _build(frozen: tuple[tuple[str, Any], ...]) -> tuple[Component, ...]:
    components = []
    for name, entry in frozen:
        if name in ("score", "acc"):
            raise ValueError(f"reward name {name!r} is reserved for compute_score's own output")
        fn = get_reward(name)
        options = dict(entry) if isinstance(entry, tuple) else {"weight": entry}
        if "weight" not in options:
            raise ValueError(f"reward {name!r}: an options mapping needs a 'weight' key, got {options}")
        weight = options.pop("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"reward {name!r}: weight must be a number, got {weight!r}")
        allowed = reward_options(name)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"reward {name!r} has no option(s) {unknown}; its options are {sorted(allowed)}")
        components.append(Component(name, float(weight), fn, tuple(sorted(options.items()))))
    return tuple(components)


def _choices(extra_info: Mapping[str, Any] | None) -> list[str] | None:
    if extra_info is None or extra_info.get("choices") is None:
        return None
    return list(extra_info["choices"])


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    rewards: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """verl's custom reward function: weighted sum of the recipe's rewards, each component, and ``acc``."""
    unknown = sorted(set(kwargs) - _VERL_SUPPLIED_KWARGS)
    if unknown:
        raise TypeError(f"compute_score got unknown reward_kwargs {unknown}; it takes 'rewards' only")
    if not isinstance(solution_str, str) or not isinstance(ground_truth, str):
        raise TypeError(
            f"compute_score needs str solution_str and ground_truth (data_source={data_source!r}), "
            f"got {type(solution_str).__name__} and {type(ground_truth).__name__}"
        )
    choices = _choices(extra_info)
    result: dict[str, float] = {}
    score = 0.0
    for component in build_components(rewards):
        value = component(solution_str, ground_truth, choices)
        result[component.name] = value
        score += component.weight * value
    result["score"] = score
    result["acc"] = mmau_match(solution_str, ground_truth, choices, extraction="lenient")
    return result
