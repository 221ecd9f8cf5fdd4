"""Prompt templates by name. The prompt is rendered at load time, so think / no-think needs no new data.

``r1aqa`` and ``r1aqa_think`` are R1-AQA's strings verbatim (src/dataset/dataset.py, src/test_mmau.py): the
choices are interpolated as a Python list repr.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

CHOICE_LINE = "Please choose the answer from the following options: {choices}."

TEMPLATES: dict[str, Callable[[str, Sequence[str]], str]] = {}


def register_template(name: str) -> Callable[[Callable[[str, Sequence[str]], str]], Callable[[str, Sequence[str]], str]]:
    """Register a prompt template ``fn(question, choices) -> str`` under ``name``."""

    def wrap(fn: Callable[[str, Sequence[str]], str]) -> Callable[[str, Sequence[str]], str]:
        if name in TEMPLATES:
            raise ValueError(f"prompt template {name!r} is already registered")
        TEMPLATES[name] = fn
        return fn

    return wrap


def _choice_line(choices: Sequence[str]) -> str:
    return CHOICE_LINE.format(choices=list(choices))


@register_template("r1aqa")
def r1aqa(question: str, choices: Sequence[str]) -> str:
    """R1-AQA's answer-only prompt (the one behind the 64.5% MMAU test-mini result)."""
    return f"{question} {_choice_line(choices)} Output the final answer in <answer> </answer>."


@register_template("r1aqa_think")
def r1aqa_think(question: str, choices: Sequence[str]) -> str:
    """R1-AQA's think prompt ("GRPO + Prompt <3>")."""
    return (
        f"{question} {_choice_line(choices)} "
        "Output the thinking process in <think> </think> and final answer in <answer> </answer>."
    )


@register_template("plain")
def plain(question: str, choices: Sequence[str]) -> str:
    """Question and choices only, no output-format instruction (direct inference)."""
    return f"{question} {_choice_line(choices)}"


def render_prompt(template: str, question: str, choices: Sequence[str]) -> str:
    """Render the named template for one question."""
    try:
        fn = TEMPLATES[template]
    except KeyError:
        raise KeyError(f"unknown prompt template {template!r}; available: {sorted(TEMPLATES)}") from None
    return fn(question, choices)
