"""Rewards for audio multiple-choice QA: plain functions registered by name, composed for verl by compute_score.

``REWARDS`` / ``get_reward(name)`` hold the registered rewards (r1aqa_accuracy, r1aqa_format, r1aqa_think_format,
listed_choice_format, mmau_match, exact_alnum, nemo_format, option_letter, think_length); verl calls
``r1aqa_plugin.rewards.verl_score.compute_score`` (also importable from here).
"""

from r1aqa_plugin.rewards.registry import REWARDS, get_reward, register_reward

# Importing the built-in reward modules runs their @register_reward decorators (a package import always runs
# this file first, so REWARDS is complete wherever it is read from).
from r1aqa_plugin.rewards import choice, letters, mmau, nemo, r1aqa, think  # noqa: E402, F401  isort: skip
from r1aqa_plugin.rewards.verl_score import compute_score

__all__ = ["REWARDS", "compute_score", "get_reward", "register_reward"]
