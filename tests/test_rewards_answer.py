"""Answer extraction: each linear-time extractor equals the regex it replaces, and stays fast on adversarial text."""

from __future__ import annotations

import random
import re
import time

import pytest

from r1aqa_plugin.rewards.answer import (
    extract_lenient,
    extract_strict,
    first_think_span,
    greedy_answer_span,
    is_answer_format,
    is_think_answer_format,
    last_answer_span,
    r1aqa_answer_span,
    resolve_choice,
)

# The regexes the extractors reproduce (R1-AQA, MMAU-strict, NeMo RL, AudSemThinker).
REFERENCES = {
    r1aqa_answer_span: lambda s: (m.group(1) if (m := re.search(r"<answer>(.*?)</answer>", s)) else None),
    last_answer_span: lambda s: (f[-1] if (f := re.findall(r"<answer>(.*?)</answer>", s, re.DOTALL)) else None),
    greedy_answer_span: lambda s: (m.group(1) if (m := re.search(r"<answer>([\s\S]*)</answer>", s)) else None),
    first_think_span: lambda s: (m.group(1) if (m := re.search(r"<think>(.*?)</think>", s, re.DOTALL)) else None),
    is_answer_format: lambda s: re.fullmatch(r"<answer>.*?</answer>", s, re.DOTALL) is not None,
    is_think_answer_format: lambda s: re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", s, re.DOTALL)
    is not None,
}

# Pieces that make the interesting cases likely: tags, partial tags, newlines, unicode whitespace, words.
PIECES = [
    "<answer>", "</answer>", "<think>", "</think>", "<answer", "answer>", "\n", " ", "\u00a0", "\t", "Dog", "é", "x",
]


def _tag_soup(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12)))


@pytest.mark.parametrize("extractor", list(REFERENCES), ids=lambda f: f.__name__)
def test_each_extractor_agrees_with_its_regex_on_random_tag_soup(extractor):
    rng = random.Random(extractor.__name__)
    reference = REFERENCES[extractor]
    for _ in range(20_000):
        text = _tag_soup(rng)
        assert extractor(text) == reference(text), repr(text)


@pytest.mark.parametrize(
    "text, strict, lenient",
    [
        ("<answer>Dog</answer>", "Dog", "Dog"),
        ("  <answer> Dog </answer>\n", "Dog", "Dog"),
        ("Dog", None, "Dog"),  # untagged: strict finds nothing, R1-AQA falls back to the whole output
        ("<answer>\nDog\n</answer>", "Dog", "<answer>\nDog\n</answer>"),  # multi-line body: R1-AQA has no DOTALL
        ("<answer>Cat</answer> no, <answer>Dog</answer>", "Dog", "Cat"),  # strict takes the last, R1-AQA the first
        ("<answer><answer>Dog</answer></answer>", "<answer>Dog", "<answer>Dog"),  # nested tags: lazy match
        ("<answer>Dog", None, "<answer>Dog"),  # unclosed
        ("<answer></answer>", "", ""),
        ("", None, ""),
        ("<answer>狗 🐕</answer>", "狗 🐕", "狗 🐕"),
    ],
)
def test_strict_and_lenient_extraction_on_a_table_of_outputs(text, strict, lenient):
    assert extract_strict(text) == strict
    assert extract_lenient(text) == lenient


CHOICES = ["Cat", "Dog", "Bird", "Fish"]


@pytest.mark.parametrize(
    "answer, index",
    [
        ("Dog", 1),
        ("dog", 1),  # text ignoring case
        ("B", 1),
        ("(B)", 1),
        ("[B]", 1),
        ("B.", 1),
        ("B)", 1),
        ("B:", 1),
        ("B. Dog", 1),
        ("(B) Dog", 1),
        ("B) dog", 1),
        ("Option B", 1),
        ("option (b)", 1),
        ("  D  ", 3),
        ("B. Cat", None),  # letter and text disagree: names nothing
        ("E", None),  # no fifth choice
        ("b", None),  # a bare lower-case letter is not an option letter
        ("BDog", None),
        ("Dogs", None),
        ("", None),
    ],
)
def test_resolve_choice_maps_texts_and_option_letters_to_the_choice_index(answer, index):
    assert resolve_choice(answer, CHOICES) == index


def test_resolve_choice_prefers_a_choice_whose_text_is_a_letter_over_the_letter_reading():
    assert resolve_choice("B", ["B", "A"]) == 0


ADVERSARIAL = {
    "1 MB of opening tags": "<answer>" * 131_072,
    "1 MB of opening tags on many lines": "<answer>x\n" * 104_857,
    "1 MB of nested tags": "<answer>" * 65_536 + "</answer>" * 58_254,
    "1 MB of think-close-answer-open runs": "<think>" + "</think> <answer>" * 61_680,
    "1 MB of spaces inside tags": "<think>" + " " * 1_000_000 + "</think>" + " " * 1_000 + "<answer>x",
    "1 MB of letters": "B" * 1_048_576,
}


@pytest.mark.parametrize("text", list(ADVERSARIAL.values()), ids=list(ADVERSARIAL))
def test_every_extractor_finishes_a_1_mb_adversarial_output_within_a_second(text):
    start = time.perf_counter()
    for extractor in REFERENCES:
        extractor(text)
    extract_lenient(text)
    extract_strict(text)
    resolve_choice(text, CHOICES)
    assert time.perf_counter() - start < 1.0
