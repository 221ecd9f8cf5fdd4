"""MMAU test-mini -> rows: per-task data_source, audio found by file name, nothing dropped silently."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from r1aqa_plugin.audio import encode_wav
from r1aqa_plugin.data import BuildReport, build_dataset, get_dataset, read_parquet

FIXTURE = Path(__file__).parent / "fixtures" / "data" / "mmau_mini.json"


def build(name, report=None, **options):
    report = report or BuildReport(name)
    return {r["extra_info"]["id"]: r for r in get_dataset(name).builder(report, **options)}, report


@pytest.fixture
def mmau(tmp_path):
    """The 5-question fixture next to a test-mini-audios/ folder holding all clips but p1's."""
    json_path = tmp_path / "mmau-test-mini.json"
    shutil.copy(FIXTURE, json_path)
    audio = tmp_path / "test-mini-audios"
    audio.mkdir()
    for name in ("s1", "s2", "m1", "m2"):
        (audio / f"{name}.wav").write_bytes(encode_wav([0.1] * 1600))
    return json_path, audio


def test_rows_carry_the_task_in_data_source_and_mmau_metadata_in_extra_info(mmau):
    json_path, audio = mmau
    rows, _ = build("mmau-test-mini", json_path=json_path, audio_dir=audio)
    m1 = rows["m1"]
    assert m1["data_source"] == "mmau-test-mini/music"
    assert m1["choices"] == ["piano", "violin"] and m1["answer"] == "violin"
    extra = m1["extra_info"]
    assert (extra["task"], extra["difficulty"], extra["sub_category"]) == ("music", "hard", "Instrumentation")
    assert (extra["source_dataset"], extra["split"], extra["version"]) == ("musiccaps", "test-mini", "v05.15.25")
    assert Path(m1["audios"][0]["path"]) == (audio / "m1.wav").resolve()


def test_the_v1_name_tags_rows_as_v1(mmau):
    json_path, audio = mmau
    rows, _ = build("mmau-test-mini-v1", json_path=json_path, audio_dir=audio)
    assert rows["s1"]["data_source"] == "mmau-test-mini-v1/sound" and rows["s1"]["extra_info"]["version"] == "v1"


def test_audio_is_found_next_to_the_json_without_an_audio_dir(mmau):
    json_path, _ = mmau
    rows, report = build("mmau-test-mini", json_path=json_path)
    assert len(rows) == 4 and report.skipped == {"audio file not found": 1}


def test_list_categories_are_normalised_and_counted(mmau):
    json_path, audio = mmau
    rows, report = build("mmau-test-mini", json_path=json_path, audio_dir=audio)
    assert rows["s2"]["extra_info"]["category"] == "Reasoning"
    assert report.warnings["category given as a list (normalised to a string)"] == 1


def test_duplicate_choices_are_kept_and_counted(mmau, tmp_path):
    json_path, audio = mmau
    report = build_dataset("mmau-test-mini", tmp_path / "m.parquet", json_path=json_path, audio_dir=audio)
    assert report.rows_written == 4
    assert report.warnings["duplicate choices"] == 2
    assert report.warnings["answer appears more than once in choices"] == 1
    assert [r["extra_info"]["id"] for r in read_parquet(tmp_path / "m.parquet")] == ["s1", "s2", "m1", "m2"]


def test_missing_audio_can_be_kept_for_a_questions_only_table_and_is_still_reported(mmau):
    json_path, audio = mmau
    rows, report = build("mmau-test-mini", json_path=json_path, audio_dir=audio, allow_missing_audio=True)
    assert len(rows) == 5 and report.rows_skipped == 0
    assert rows["p1"]["audios"][0]["path"].endswith("p1.wav")
    assert "p1.wav" in report.summary()


def test_an_unpublished_json_is_noted_in_the_report(mmau):
    json_path, audio = mmau
    _, report = build("mmau-test-mini", json_path=json_path, audio_dir=audio)
    assert any("not a published MMAU test-mini file" in note for note in report.notes)


def test_the_real_current_file_builds_1000_rows_split_333_334_333(mmau_dir, tmp_path):
    report = build_dataset(
        "mmau-test-mini", tmp_path / "mmau.parquet", json_path=mmau_dir / "mmau-test-mini.json",
        audio_dir=tmp_path, allow_missing_audio=True,
    )  # fmt: skip
    assert report.rows_written == 1000 and report.rows_skipped == 0 and report.notes == []
    assert report.per_source == {
        "mmau-test-mini/sound": 333, "mmau-test-mini/music": 334, "mmau-test-mini/speech": 333,
    }  # fmt: skip
    assert report.warnings["duplicate choices"] == 27
    assert report.warnings["answer appears more than once in choices"] == 16
    assert report.warnings["category given as a list (normalised to a string)"] == 13
    rows = read_parquet(tmp_path / "mmau.parquet")
    assert Counter(r["extra_info"]["difficulty"] for r in rows) == {"easy": 224, "medium": 540, "hard": 236}
    items = json.loads((mmau_dir / "mmau-test-mini.json").read_text())
    assert [r["answer"] for r in rows] == [item["answer"] for item in items]


def test_building_the_v1_file_under_the_current_name_is_noted(mmau_dir, tmp_path):
    _, report = build(
        "mmau-test-mini", json_path=mmau_dir / "mmau-test-mini-v1.json", audio_dir=tmp_path, allow_missing_audio=True
    )
    assert report.notes == ["mmau-test-mini-v1.json is the MMAU v1 file, but it is being built as v05.15.25"]
