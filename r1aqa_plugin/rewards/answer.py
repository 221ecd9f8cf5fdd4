"""Answer and think-span extraction from a model's completion, without regex backtracking.

Each function reproduces one regular expression's result exactly (the docstring names it), but is written with
``str.find`` so that it runs in linear time: the regexes themselves go quadratic on adversarial completions
(e.g. a megabyte of ``<answer>`` with no closing tag), and rewards run on every rollout sample.
tests/test_rewards_answer.py checks each function against its regex on random tag soup.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def _first_span(text: str, open_tag: str, close_tag: str, *, dotall: bool) -> str | None:
    """First match of ``open(.*?)close`` (lazy); without DOTALL the body cannot contain a newline."""
    if dotall:
        start = text.find(open_tag)
        end = -1 if start < 0 else text.find(close_tag, start + len(open_tag))
        return text[start + len(open_tag) : end] if end >= 0 else None
    pos = 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return None
        body = start + len(open_tag)
        newline = text.find("\n", body)
        line_end = len(text) if newline < 0 else newline
        end = text.find(close_tag, body, line_end)
        if end >= 0:
            return text[body:end]
        # If the earliest opening tag of a line has no closing tag after it on that line, no later one has.
        if newline < 0:
            return None
        pos = newline + 1


def r1aqa_answer_span(text: str) -> str | None:
    """``re.search(r"<answer>(.*?)</answer>", text).group(1)`` (R1-AQA: first match, no DOTALL), or None."""
    return _first_span(text, ANSWER_OPEN, ANSWER_CLOSE, dotall=False)


def last_answer_span(text: str) -> str | None:
    """``re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)[-1]`` (the last tagged answer), or None."""
    found = None
    pos = 0
    while True:
        start = text.find(ANSWER_OPEN, pos)
        if start < 0:
            return found
        body = start + len(ANSWER_OPEN)
        end = text.find(ANSWER_CLOSE, body)
        if end < 0:
            return found
        found = text[body:end]
        pos = end + len(ANSWER_CLOSE)


def greedy_answer_span(text: str) -> str | None:
    """``re.search(r"<answer>([\\s\\S]*)</answer>", text).group(1)`` (NeMo RL: first open to last close), or None."""
    start = text.find(ANSWER_OPEN)
    if start < 0:
        return None
    body = start + len(ANSWER_OPEN)
    end = text.rfind(ANSWER_CLOSE, body)
    return text[body:end] if end >= 0 else None


def first_think_span(text: str) -> str | None:
    """``re.search(r"<think>(.*?)</think>", text, re.DOTALL).group(1)`` (AudSemThinker), or None."""
    return _first_span(text, THINK_OPEN, THINK_CLOSE, dotall=True)


def extract_strict(text: str) -> str | None:
    """The last ``<answer>…</answer>`` body (DOTALL), stripped; None when the output has no complete tag."""
    span = last_answer_span(text)
    return None if span is None else span.strip()


def extract_lenient(text: str) -> str:
    """R1-AQA's post-processing: the first single-line ``<answer>`` body, else the whole output; stripped."""
    span = r1aqa_answer_span(text)
    return (text if span is None else span).strip()


def is_answer_format(text: str) -> bool:
    """``re.fullmatch(r"<answer>.*?</answer>", text, re.DOTALL)`` is not None (R1-AQA's format reward)."""
    long_enough = len(text) >= len(ANSWER_OPEN) + len(ANSWER_CLOSE)
    return long_enough and text.startswith(ANSWER_OPEN) and text.endswith(ANSWER_CLOSE)


def is_think_answer_format(text: str) -> bool:
    r"""``re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", text, re.DOTALL)`` is not None."""
    if not (text.startswith(THINK_OPEN) and text.endswith(ANSWER_CLOSE)):
        return False
    answer_close = len(text) - len(ANSWER_CLOSE)
    pos = len(THINK_OPEN)
    while True:
        close = text.find(THINK_CLOSE, pos)
        if close < 0:
            return False
        k = close + len(THINK_CLOSE)
        # \s in a str pattern is Py_UNICODE_ISSPACE, the same predicate as str.isspace().
        while k < len(text) and text[k].isspace():
            k += 1
        if text.startswith(ANSWER_OPEN, k):
            # The earliest <answer> leaves the most room for the body, so the first one found decides.
            return k + len(ANSWER_OPEN) <= answer_close
        pos = close + 1


# "B", "(B)", "[B]", "B.", "B)", "B:", "Option B", "option (b)", "B. Dog", "(B) Dog". A bare lower-case letter is
# not an option letter (it is usually the article "a"), unless it follows "option".
_LETTER = re.compile(
    r"(?:(?i:option)\s*[(\[]?(?P<opt>[A-Za-z])|[(\[]?(?P<bare>[A-Z]))[)\]]?(?:(?:\s*[.:)]|\s)\s*(?P<text>.*))?",
    re.DOTALL,
)


def resolve_choice(answer: str, choices: Sequence[str]) -> int | None:
    """Index of the choice an answer names: its exact text, else its text ignoring case, else an option letter."""
    answer = answer.strip()
    for i, choice in enumerate(choices):
        if answer == choice.strip():
            return i
    folded = answer.casefold()
    for i, choice in enumerate(choices):
        if folded == choice.strip().casefold():
            return i
    m = _LETTER.fullmatch(answer)
    if m is None:
        return None
    letter = (m.group("opt") or m.group("bare")).upper()
    index = ord(letter) - ord("A")
    if index >= len(choices):
        return None
    text = (m.group("text") or "").strip()
    # "B. Dog" counts only when "Dog" is choice B's text: a letter and a text that disagree name no choice.
    if text and text.casefold() != choices[index].strip().casefold():
        return None
    return index
