"""A format reward that also asks the answer to be one of the listed choices.

R1-AQA's format reward checks the tags, not the text between them, so ``<answer>Italianuitar</answer>`` earns it
as a listed answer does. In a GRPO group where some completions lose the format, any tagged text then has a
positive advantage over them, and a policy can settle on one off-list answer for a whole task: every sample of the
group alike, advantage zero, no way back but the KL loss (docs/learning.md, the twelfth learning-proof run).
``listed_choice_format`` gives such an answer what a broken format gets. The answer is compared with the choices as
``r1aqa_accuracy`` compares it with the ground truth: R1-AQA's extraction, exact text.
"""

from __future__ import annotations

from collections.abc import Sequence

from r1aqa_plugin.rewards.answer import extract_lenient, is_answer_format
from r1aqa_plugin.rewards.registry import register_reward, require_choices


def names_a_listed_choice(response: str, choices: Sequence[str]) -> bool:
    """R1-AQA's extraction of the answer is one of the choices' exact text (stripped), as its accuracy compares."""
    return extract_lenient(response) in {c.strip() for c in choices}


@register_reward("listed_choice_format")
def listed_choice_format(response: str, ground_truth: str, choices: Sequence[str] | None) -> float:
    """1.0 iff the completion is exactly ``<answer>…</answer>`` and its answer is a listed choice's exact text."""
    options = require_choices("listed_choice_format", choices)
    return 1.0 if is_answer_format(response) and names_a_listed_choice(response, options) else 0.0
