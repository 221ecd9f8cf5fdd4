"""The MMAU scorer against hand-computed fixtures and, where ../shared has them, the real test-mini files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1aqa_plugin.eval.published import mmau_version
from r1aqa_plugin.eval.robustness import position_bias, shuffle_choices
from r1aqa_plugin.eval.scoring import MissingPredictionError, official_text, score_items
from r1aqa_plugin.rewards.mmau import string_match

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def _fixture_items() -> list[dict]:
    return json.loads((FIXTURES / "mmau_predictions.json").read_text(encoding="utf-8"))


# Per-item verdicts of the 12 fixture items, worked out by hand from each rule (see fixtures/eval/README.md).
EXPECTED_CORRECT = {
    "official": [1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0],
    "lenient": [1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0],
    "strict": [1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 0, 0],
}


def test_official_mode_prints_exactly_what_mmau_evaluation_py_prints_for_the_fixture():
    scores = score_items(_fixture_items())
    expected = (FIXTURES / "mmau_predictions_official.txt").read_text(encoding="utf-8").rstrip("\n")
    assert official_text(scores.modes["official"]) == expected


@pytest.mark.parametrize("mode", list(EXPECTED_CORRECT))
def test_each_mode_judges_each_fixture_item_as_computed_by_hand(mode):
    assert [int(c) for c in score_items(_fixture_items()).modes[mode].correct] == EXPECTED_CORRECT[mode]


def test_lenient_and_strict_breakdowns_match_the_hand_computed_numbers():
    modes = score_items(_fixture_items()).modes

    def pct(groups):
        return {k: round(t.percent, 2) for k, t in groups.items()}

    assert pct(modes["lenient"].by_task) == {"sound": 75.0, "music": 66.67, "speech": 60.0}
    assert pct(modes["lenient"].by_difficulty) == {"easy": 66.67, "hard": 75.0, "medium": 60.0}
    assert round(modes["lenient"].total.percent, 2) == 66.67
    assert pct(modes["strict"].by_task) == {"sound": 50.0, "music": 66.67, "speech": 60.0}
    assert pct(modes["strict"].by_difficulty) == {"easy": 66.67, "hard": 50.0, "medium": 60.0}
    assert round(modes["strict"].total.percent, 2) == 58.33


def test_unparseable_counts_outputs_without_a_complete_answer_tag():
    # items 2 ("The answer is dog."), 11 ("red car") and 12 ("") have none; item 8's multi-line tag counts
    assert score_items(_fixture_items()).unparseable == 3


def test_a_missing_prediction_raises_naming_the_items_instead_of_shrinking_the_denominator():
    items = _fixture_items()
    del items[3]["model_output"]
    del items[7]["model_output"]
    with pytest.raises(MissingPredictionError, match=r"2 of 12 items have no prediction .*: fx-04, fx-08"):
        score_items(items)


def test_r1aqas_model_prediction_key_is_accepted_as_the_prediction():
    items = _fixture_items()
    for item in items:
        item["model_prediction"] = item.pop("model_output")
    assert score_items(items).modes["official"].total.correct == 7


def test_lenient_and_strict_read_the_raw_generation_when_the_file_keeps_it():
    items = [{"id": "a", "task": "sound", "difficulty": "easy", "choices": ["Dog", "Cat"], "answer": "Dog",
              "model_output": "Dog", "model_output_raw": "<think>a cat?</think><answer>Dog</answer>"}]
    scores = score_items(items)
    assert [scores.modes[m].total.correct for m in ("official", "lenient", "strict")] == [1, 1, 1]
    assert scores.unparseable == 0


def test_a_non_string_prediction_is_an_error_naming_the_item():
    items = _fixture_items()
    items[0]["model_output"] = None
    with pytest.raises(TypeError, match="fx-01: model_output must be a str"):
        score_items(items)


def test_tasks_and_difficulties_outside_mmaus_lists_get_their_own_rows():
    items = [{"id": "a", "task": "animals", "choices": ["Dog", "Cat"], "answer": "Dog", "model_output": "Dog"}]
    modes = score_items(items).modes["official"]
    assert modes.by_task["animals"].correct == 1 and modes.by_task["sound"].total == 0
    assert modes.by_difficulty["None"].total == 1


def test_mmau_version_is_read_from_data_source_and_mixing_versions_is_refused():
    assert mmau_version(["mmau-test-mini-v1/sound", "mmau-test-mini-v1/music"]) == "v1"
    assert mmau_version(["mmau-test-mini/speech"]) == "v05.15.25"
    assert mmau_version(["synthetic-aqa/sound", None]) is None
    with pytest.raises(ValueError, match="mix MMAU versions"):
        mmau_version(["mmau-test-mini/sound", "mmau-test-mini-v1/sound"])


def test_position_bias_counts_accuracy_by_answer_position_and_predicted_positions():
    items = [
        {"id": "a", "choices": ["Dog", "Cat"], "answer": "Dog"},
        {"id": "b", "choices": ["Dog", "Cat"], "answer": "Cat"},
        {"id": "c", "choices": ["Dog", "Cat", "Cow"], "answer": "Cow"},
    ]
    bias = position_bias(items, ["<answer>Dog</answer>", "<answer>Dog</answer>", "moo"])
    by_position = {k: (t.correct, t.total) for k, t in bias.accuracy_by_answer_position.items()}
    assert by_position == {0: (1, 1), 1: (0, 1), 2: (0, 1)}
    assert dict(bias.predicted_positions) == {0: 2, "none": 1}


def test_shuffling_choices_is_seeded_per_item_and_keeps_every_choice():
    items = _fixture_items()
    once, again, other = shuffle_choices(items, 1), shuffle_choices(items, 1), shuffle_choices(items, 2)
    assert once == again and once != other
    assert all(sorted(a["choices"]) == sorted(b["choices"]) for a, b in zip(items, once))


@pytest.mark.parametrize("name, version", [("mmau-test-mini.json", "v05.15.25"), ("mmau-test-mini-v1.json", "v1")])
def test_on_real_mmau_each_answer_scores_100_percent_and_other_choices_score_as_the_rule_says(mmau_dir, name, version):
    items = json.loads((mmau_dir / name).read_text(encoding="utf-8"))
    assert len(items) == 1000
    scores = score_items([{**item, "model_output": item["answer"]} for item in items])
    assert all(scores.modes[m].total.percent == 100 for m in ("official", "lenient"))
    assert all(t.percent == 100 for t in scores.modes["official"].by_task.values())
    # Answer every item with a choice other than its answer text, preferring one the official rule accepts:
    # exactly the degenerate items must score (9 on the current file, 4 on v1, as counted in the research notes).
    others = []
    for item in items:
        wrong = [c for c in item["choices"] if c != item["answer"]]
        passing = [c for c in wrong if string_match(item["answer"], c, item["choices"])]
        others.append({**item, "model_output": (passing or wrong)[0]})
    official = score_items(others).modes["official"]
    accepted = {item["id"] for item, ok in zip(others, official.correct) if ok}
    assert len(accepted) == official.total.correct == {"v05.15.25": 9, "v1": 4}[version]
    by_id = {item["id"]: item for item in items}
    # the sound-order item whose choices are permutations of the same four tokens is one of them
    if version == "v05.15.25":
        assert any(by_id[i]["task"] == "sound" for i in accepted)
        assert sum(by_id[i]["task"] == "speech" for i in accepted) == 8
