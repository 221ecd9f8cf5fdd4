"""Option-letter answers: "B", "(B)", "B.", "B. Dog", "Option B" are mapped to the choice they name.

The answer text is the last ``<answer>`` body, or the whole completion when it has none. It names a choice by
that choice's exact text, its text ignoring case, or its letter (A = first choice, in prompt order); a letter
followed by a text that is not that choice's text names nothing. With duplicate choices, either copy counts.
"""

from __future__ import annotations

from collections.abc import Sequence

from r1aqa_plugin.rewards.answer import extract_strict, resolve_choice
from r1aqa_plugin.rewards.registry import register_reward, require_choices


@register_reward("option_letter")
def option_letter(response: str, ground_truth: str, choices: Sequence[str] | None) -> float:
    """1.0 iff the answer names (by text or option letter) a choice whose text is the ground truth."""
    options = require_choices("option_letter", choices)
    answer = extract_strict(response)
    index = resolve_choice(response if answer is None else answer, options)
    return 1.0 if index is not None and options[index] == ground_truth else 0.0
