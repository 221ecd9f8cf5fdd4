"""The row contract: validation names the row and the fault, parquet round-trips, the report counts everything."""

from __future__ import annotations

import pytest

from r1aqa_plugin.data import DATASETS, BuildReport, get_dataset, make_record, read_parquet, write_parquet
from r1aqa_plugin.data.records import BuildError, RecordError, validate_record
from r1aqa_plugin.data.registry import arg, register_dataset


def row(**overrides):
    fields = {
        "data_source": "test/sound",
        "question": "What is heard?",
        "choices": ["dog", "cat", "bird"],
        "answer": "cat",
        "audios": [{"path": "/data/a.wav"}],
        "id": "q1",
        "index": 0,
        "source_dataset": "unit",
    }
    fields.update(overrides)
    return make_record(**fields)


def test_a_well_formed_row_passes_with_no_findings():
    assert validate_record(row(), "unit") == []


def test_an_answer_not_among_the_choices_names_the_row_and_the_answer():
    with pytest.raises(RecordError, match=r"unit: row id=q7: answer 'cow' is not one of") as err:
        validate_record(row(id="q7", answer="cow"), "unit")
    assert err.value.reason == "answer not among choices"


def test_an_empty_question_is_rejected():
    with pytest.raises(RecordError, match="question is empty"):
        validate_record(row(question="   "), "unit")


def test_a_single_choice_is_rejected():
    with pytest.raises(RecordError, match="at least 2 choices"):
        validate_record(row(choices=["cat"]), "unit")


def test_a_row_without_audio_is_rejected():
    with pytest.raises(RecordError, match="no audio"):
        validate_record(row(audios=[]), "unit")


def test_an_audio_item_with_neither_path_nor_bytes_is_rejected():
    with pytest.raises(RecordError, match="neither path nor bytes"):
        validate_record(row(audios=[{"path": None, "bytes": None}]), "unit")


def test_a_ground_truth_that_differs_from_the_answer_is_rejected():
    bad = row()
    bad["reward_model"]["ground_truth"] = "dog"
    with pytest.raises(RecordError, match="ground_truth differs"):
        validate_record(bad, "unit")


def test_duplicate_choices_are_allowed_but_reported():
    # MMAU test-mini has 27 such questions; a benchmark must build unchanged
    assert validate_record(row(choices=["dog", "dog", "cat"]), "unit") == ["duplicate choices"]
    assert validate_record(row(choices=["cat", "dog", "cat"]), "unit") == [
        "duplicate choices",
        "answer appears more than once in choices",
    ]


def test_rows_round_trip_through_parquet_with_the_stable_schema(tmp_path):
    rows = [
        row(id="a", audios=[{"path": "/x.wav", "bytes": None}], meta={"k": 1}),
        row(id="b", audios=[{"path": None, "bytes": b"RIFF...."}], difficulty="hard"),
    ]
    path = tmp_path / "out.parquet"
    assert write_parquet(iter(rows), path, rows_per_group=1) == 2
    back = read_parquet(path)
    assert back == rows
    assert not (tmp_path / "out.parquet.partial").exists()


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    def rows():
        yield row(id="a")
        raise RuntimeError("builder broke")

    path = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError, match="builder broke"):
        write_parquet(rows(), path)
    assert list(tmp_path.iterdir()) == []


def test_the_report_counts_skips_and_warnings_with_examples():
    report = BuildReport("unit")
    for i in range(7):
        report.skip("audio file not found", f"item {i}")
    report.warn("duplicate choices", "item 9")
    report.wrote(row())
    text = report.summary()
    assert report.rows_skipped == 7
    assert "1 rows written, 7 skipped" in text
    assert "7  audio file not found" in text and "e.g. item 4" in text and "item 5" not in text
    assert "1  duplicate choices" in text and "1  test/sound" in text


def test_a_problem_skip_is_fatal_under_strict_but_a_filter_is_not():
    report = BuildReport("unit", strict=True)
    report.skip("--drop-view: visual-only question", "item 1", problem=False)
    with pytest.raises(BuildError, match="unit: audio file not found: item 2"):
        report.skip("audio file not found", "item 2")


def test_an_unknown_dataset_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="available: avqa, mmau-test-mini, mmau-test-mini-v1, synthetic-aqa"):
        get_dataset("mmau")


def test_a_registered_builder_is_found_by_name_and_a_second_registration_is_refused():
    @register_dataset("unit-test-set", description="two fixed rows", arguments=[arg("--n", type=int)])
    def build(report, *, n=2):
        yield from (row(id=str(i)) for i in range(n))

    try:
        spec = get_dataset("unit-test-set")
        assert spec.description == "two fixed rows" and spec.option_names() == ["n"]
        assert len(list(spec.builder(BuildReport("unit"), n=3))) == 3
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("unit-test-set", description="again")(build)
    finally:
        DATASETS.pop("unit-test-set", None)
