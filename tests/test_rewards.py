"""Each registered reward on a table of completions, the registry, and verl's compute_score composition."""

from __future__ import annotations

import time

import numpy as np
import pytest

from r1aqa_plugin.rewards import REWARDS, compute_score, get_reward, register_reward
from r1aqa_plugin.rewards.think import length_factor

CHOICES = ["Cat", "Dog", "Bird", "Fish"]
MB = 1_048_576

# (completion, ground truth, {reward name: expected value}); rewards not named are not asserted for that row.
CASES = [
    # plain tagged answer
    ("<answer>Dog</answer>", "Dog",
     {"r1aqa_accuracy": 1, "r1aqa_format": 1, "r1aqa_think_format": 0, "mmau_match": 1, "exact_alnum": 1,
      "nemo_format": 0.75, "option_letter": 1, "think_length": 0, "listed_choice_format": 1}),
    # a wrong but listed answer keeps the listed-choice format; an off-list one (the twelfth learning-proof run's
    # collapse) keeps R1-AQA's format only
    ("<answer>Cat</answer>", "Dog", {"r1aqa_accuracy": 0, "r1aqa_format": 1, "listed_choice_format": 1}),
    ("<answer>Catuitar</answer>", "Dog", {"r1aqa_accuracy": 0, "r1aqa_format": 1, "listed_choice_format": 0}),
    # R1-AQA strips the tag body; format still holds (the body may hold anything)
    ("<answer> Dog </answer>", "Dog", {"r1aqa_accuracy": 1, "r1aqa_format": 1, "exact_alnum": 1,
                                       "listed_choice_format": 1}),
    # a trailing newline breaks R1-AQA's fullmatch format but not accuracy
    ("<answer>Dog</answer>\n", "Dog", {"r1aqa_accuracy": 1, "r1aqa_format": 0, "nemo_format": 0.75,
                                        "listed_choice_format": 0}),
    # untagged exact choice: R1-AQA accuracy 1 (its quirk), format 0, NeMo's exact_alnum needs the tag
    ("Dog", "Dog", {"r1aqa_accuracy": 1, "r1aqa_format": 0, "mmau_match": 1, "exact_alnum": 0, "option_letter": 1}),
    # case: R1-AQA is case-sensitive, MMAU and alnum are not
    ("<answer>dog</answer>", "Dog", {"r1aqa_accuracy": 0, "mmau_match": 1, "exact_alnum": 1, "option_letter": 1,
                                     "listed_choice_format": 0}),
    # multi-line body: R1-AQA's regex has no DOTALL, so it compares the whole output; MMAU then matches the raw
    # output, whose extra token "answer" is in no choice
    ("<answer>\nDog\n</answer>", "Dog", {"r1aqa_accuracy": 0, "r1aqa_format": 1, "exact_alnum": 1, "mmau_match": 1}),
    # two answers: R1-AQA takes the first, option_letter (strict) the last, NeMo the greedy span
    ("<answer>Cat</answer><answer>Dog</answer>", "Dog",
     {"r1aqa_accuracy": 0, "r1aqa_format": 1, "option_letter": 1, "exact_alnum": 0, "mmau_match": 0}),
    # nested tags
    ("<answer><answer>Dog</answer></answer>", "Dog", {"r1aqa_accuracy": 0, "r1aqa_format": 1, "exact_alnum": 0}),
    # option letters
    ("<answer>B</answer>", "Dog", {"r1aqa_accuracy": 0, "mmau_match": 0, "option_letter": 1, "listed_choice_format": 0}),
    ("<answer>(B) Dog</answer>", "Dog", {"r1aqa_accuracy": 0, "mmau_match": 1, "option_letter": 1}),
    ("<answer>Option B</answer>", "Dog", {"option_letter": 1, "mmau_match": 0}),
    ("<answer>B. Cat</answer>", "Dog", {"option_letter": 0}),
    # near misses: a plural, an extra word from a wrong choice, punctuation
    ("<answer>Dogs</answer>", "Dog", {"r1aqa_accuracy": 0, "mmau_match": 0, "exact_alnum": 0, "option_letter": 0}),
    ("<answer>Dog or Cat</answer>", "Dog", {"mmau_match": 0, "exact_alnum": 0}),
    ("<answer>Dog!</answer>", "Dog", {"r1aqa_accuracy": 0, "mmau_match": 1, "exact_alnum": 1}),
    ("<answer>The dog</answer>", "Dog", {"mmau_match": 1, "exact_alnum": 0}),
    # think format and length
    ("<think>it barks</think>\n<answer>Dog</answer>", "Dog",
     {"r1aqa_format": 0, "r1aqa_think_format": 1, "nemo_format": 1.0, "think_length": 1, "r1aqa_accuracy": 1}),
    ("<think>a</think>x<answer>Dog</answer>", "Dog", {"r1aqa_think_format": 0}),
    ("<think>" + "word " * 100 + "</think><answer>Dog</answer>", "Dog", {"think_length": 0.5}),
    ("<think>" + "word " * 200 + "</think><answer>Dog</answer>", "Dog", {"think_length": 0}),
    # unicode
    ("<answer>Café</answer>", "Café", {"r1aqa_accuracy": 1, "mmau_match": 1, "exact_alnum": 1}),
    # empty
    ("", "Dog", {"r1aqa_accuracy": 0, "r1aqa_format": 0, "mmau_match": 0, "exact_alnum": 0, "nemo_format": 0,
                 "option_letter": 0, "think_length": 0}),
    ("<answer></answer>", "Dog", {"r1aqa_accuracy": 0, "r1aqa_format": 1, "mmau_match": 0, "exact_alnum": 0,
                                  "listed_choice_format": 0}),
]


def _case_id(case):
    return repr(case[0][:40])


@pytest.mark.parametrize("completion, truth, expected", CASES, ids=[_case_id(c) for c in CASES])
def test_each_reward_scores_the_table_of_completions_as_expected(completion, truth, expected):
    got = {name: get_reward(name)(completion, truth, CHOICES) for name in expected}
    assert got == pytest.approx({name: float(v) for name, v in expected.items()})


def test_every_registered_reward_is_covered_by_the_table():
    covered = {name for _, _, expected in CASES for name in expected}
    assert covered == set(REWARDS)


def test_r1aqa_accuracy_reads_a_tagged_ground_truth_the_way_r1aqa_builds_its_solution_string():
    assert get_reward("r1aqa_accuracy")("<answer>Dog</answer>", "<answer> Dog </answer>", None) == 1.0


def test_r1aqa_accuracy_with_math_verify_requires_the_package_or_says_how_to_install_it():
    try:
        import math_verify  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="math-verify"):
            get_reward("r1aqa_accuracy")("3", "<answer>3</answer>", None, math_verify=True)
    else:
        assert get_reward("r1aqa_accuracy")("the answer is 3", "<answer>3</answer>", None, math_verify=True) == 1.0


# MMAU's degenerate items, as the official rule scores them.
DEGENERATE = [
    # choices that are permutations of the same tokens: no token is exclusive to a wrong choice, any order passes
    (["dog, cat, bird", "cat, dog, bird", "bird, cat, dog"], "dog, cat, bird", "bird, cat, dog", 1.0),
    # two choices both match: a subset answer is accepted when the superset's extra token is absent
    (["first: neutral, second: frustration", "first: frustration, second: neutral"],
     "first: neutral, second: frustration", "first: frustration, second: neutral", 1.0),
    # MMAU's year item: "ninety-one" adds only "one", which the answer already has, so it passes...
    (["one thousand, nine hundred and ninety", "one thousand, nine hundred and ninety-two",
      "one thousand, nine hundred and ninety-one"],
     "one thousand, nine hundred and ninety", "one thousand, nine hundred and ninety-one", 1.0),
    # ...while "ninety-two" adds "two", a token exclusive to a wrong choice
    (["one thousand, nine hundred and ninety", "one thousand, nine hundred and ninety-two",
      "one thousand, nine hundred and ninety-one"],
     "one thousand, nine hundred and ninety", "one thousand, nine hundred and ninety-two", 0.0),
    # a prediction missing one of the answer's tokens fails
    (["one thousand, nine hundred and ninety", "one thousand, nine hundred and ninety-two"],
     "one thousand, nine hundred and ninety-two", "one thousand, nine hundred and ninety", 0.0),
    # duplicate choices: the answer's duplicate contributes nothing
    (["Dog", "Dog", "Cat"], "Dog", "Dog", 1.0),
]


@pytest.mark.parametrize("choices, truth, prediction, expected", DEGENERATE)
def test_mmau_match_scores_mmau_degenerate_items_as_the_official_rule_does(choices, truth, prediction, expected):
    assert get_reward("mmau_match")(f"<answer>{prediction}</answer>", truth, choices) == expected


def test_rewards_that_need_choices_say_so_when_the_row_has_none():
    for name in ("mmau_match", "option_letter", "listed_choice_format"):
        with pytest.raises(ValueError, match=r"extra_info\['choices'\]"):
            get_reward(name)("<answer>Dog</answer>", "Dog", None)


@pytest.mark.parametrize(
    "n, encourage, expected",
    [(0, False, 1.0), (95, False, 1.0), (100, False, 0.5), (103, False, pytest.approx(0.2)), (105, False, 0.0),
     (100, True, 1.0), (95, True, 1.0), (90, True, 0.5), (85, True, 0.0), (110, True, 0.0)],
)
def test_think_length_factor_follows_the_documented_formula_with_audsemthinker_defaults(n, encourage, expected):
    assert length_factor(n, target=100, alpha=0.1, delta=0.5, encourage_target=encourage) == expected


ADVERSARIAL = [
    "<answer>" * (MB // 8),
    "<answer>x\n" * (MB // 10),
    "<answer>" * (MB // 16) + "</answer>" * (MB // 18),
    "<think>" + "</think> <answer>" * (MB // 17),
    "<think>" + "w " * (MB // 2) + "</think><answer>Dog</answer>",
    "Dog " * (MB // 4),
]


@pytest.mark.parametrize(
    "text", ADVERSARIAL, ids=["opens", "open-lines", "nested", "think-answer", "long-think", "words"]
)
def test_every_reward_and_compute_score_finish_a_1_mb_adversarial_output_within_a_second(text):
    every = {name: 1.0 for name in REWARDS}
    start = time.perf_counter()
    compute_score("mmau-test-mini/sound", text, "Dog", {"choices": CHOICES}, rewards=every)
    assert time.perf_counter() - start < 1.0


def test_compute_score_defaults_to_r1aqa_accuracy_plus_format_with_weight_one():
    out = compute_score("mmau-test-mini/sound", "<answer>Dog</answer>", "Dog", {"choices": CHOICES})
    assert out == {"r1aqa_accuracy": 1.0, "r1aqa_format": 1.0, "score": 2.0, "acc": 1.0}


def test_compute_score_weights_components_and_passes_options_to_the_named_reward():
    completion = "<think>" + "w " * 10 + "</think><answer>B</answer>"
    out = compute_score(
        "synthetic-aqa/speech", completion, "Dog", {"choices": np.array(CHOICES, dtype=object)},
        rewards={"option_letter": 0.8, "think_length": {"weight": 0.5, "target_words": 10}, "r1aqa_think_format": 2},
    )
    assert out == {"option_letter": 1.0, "think_length": 0.5, "r1aqa_think_format": 1.0,
                   "score": pytest.approx(0.8 + 0.25 + 2.0), "acc": 0.0}


def test_compute_score_acc_is_the_official_mmau_rule_on_r1aqas_extraction_whatever_the_rewards():
    out = compute_score("x", "<answer>the dog</answer>", "Dog", {"choices": CHOICES}, rewards={"exact_alnum": 1.0})
    assert out == {"exact_alnum": 0.0, "score": 0.0, "acc": 1.0}


def test_compute_score_ignores_the_router_kwargs_verl_adds_and_rejects_any_other():
    compute_score("x", "Dog", "Dog", {"choices": CHOICES}, reward_router_address=None, reward_model_tokenizer=None)
    with pytest.raises(TypeError, match=r"unknown reward_kwargs \['reward'\]"):
        compute_score("x", "Dog", "Dog", {"choices": CHOICES}, reward={"r1aqa_format": 1.0})


def test_compute_score_without_choices_in_extra_info_raises_a_clear_error():
    with pytest.raises(ValueError, match="choices"):
        compute_score("x", "<answer>Dog</answer>", "Dog", {"id": "q1"})


@pytest.mark.parametrize(
    "rewards, message",
    [
        ({"r1aqa_acuracy": 1.0}, r"unknown reward 'r1aqa_acuracy'; registered rewards: \['exact_alnum'"),
        ({"think_length": {"weight": 1, "target": 5}}, r"no option\(s\) \['target'\]; its options are"),
        ({"think_length": {"target_words": 5}}, "needs a 'weight' key"),
        ({"r1aqa_format": "1"}, "weight must be a number"),
        ({}, "non-empty mapping"),
    ],
)
def test_a_bad_reward_spec_raises_an_error_naming_what_is_wrong(rewards, message):
    with pytest.raises((KeyError, ValueError), match=message):
        compute_score("x", "Dog", "Dog", {"choices": CHOICES}, rewards=rewards)


def test_registering_a_reward_twice_or_with_the_wrong_signature_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_reward("r1aqa_format")(lambda response, ground_truth, choices: 0.0)
    with pytest.raises(TypeError, match="expected fn"):
        register_reward("test_bad_signature")(lambda completion, truth: 0.0)
    assert "test_bad_signature" not in REWARDS


def test_compute_score_accepts_the_omegaconf_mapping_hydra_passes():
    omegaconf = pytest.importorskip("omegaconf")
    spec = omegaconf.OmegaConf.create({"r1aqa_accuracy": 1.0, "think_length": {"weight": 0.5, "target_words": 3}})
    out = compute_score("x", "<think>a b c</think><answer>Dog</answer>", "Dog", {"choices": CHOICES}, rewards=spec)
    assert out["score"] == pytest.approx(1.0 + 0.5 * 0.5)


def test_listed_choice_format_takes_away_the_advantage_an_off_list_answer_has_over_a_broken_format():
    """The twelfth learning-proof run's collapse route: in a group where some samples lose the format, R1-AQA's
    format reward gives a tagged off-list answer the advantage of a listed wrong one; listed_choice_format gives it
    the advantage of a broken format (verl's GRPO advantage on compute_score's scores)."""
    import torch
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    choices = ["English", "French", "German", "Italian", "Spanish"]
    group = ["<answer>French</answer>", "<answer>Italian</answer>", "<answer>Italianuitar</answer>",
             "<answer>Italian", "Italian uitar uitar"]  # right, listed wrong, off-list in tags, two broken formats

    def advantages(rewards: dict[str, float]) -> list[float]:
        scores = torch.tensor([compute_score("x", text, "French", {"choices": choices}, rewards=rewards)["score"]
                               for text in group])
        token_rewards = torch.zeros(len(group), 2)
        token_rewards[:, -1] = scores
        adv, _ = compute_grpo_outcome_advantage(token_rewards, torch.ones(len(group), 2), index=["p"] * len(group))
        return adv[:, 0].tolist()

    r1aqa = advantages({"r1aqa_accuracy": 1.0, "r1aqa_format": 1.0})
    assert r1aqa[2] == pytest.approx(r1aqa[1]) and r1aqa[2] > 0 > r1aqa[3]
    listed = advantages({"r1aqa_accuracy": 1.0, "listed_choice_format": 1.0})
    assert listed[2] == pytest.approx(listed[3]) and listed[2] < 0 < listed[1]
