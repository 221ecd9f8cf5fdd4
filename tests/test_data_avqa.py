"""AVQA -> rows as R1-AQA uses them: video -> audio, index -> text, R1-AQA's file names, counted drops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from r1aqa_plugin.audio import encode_wav, load_audio
from r1aqa_plugin.data import BuildReport, build_dataset, read_parquet
from r1aqa_plugin.data.avqa import audio_candidates, build_avqa
from r1aqa_plugin.data.records import BuildError

ITEMS = [
    {"id": 1, "video_name": "-HG3Omg_89c_000030", "video_id": 11, "question_text": "What happened in the video?",
     "multi_choice": ["motorboat", "Yacht consignment", "Sailboat set sail", "Consignment car"], "answer": 2,
     "question_relation": "Both", "question_type": "Happening"},
    {"id": 2, "video_name": "abc_def_000105", "video_id": 12, "question_text": "Which color is the car in the video?",
     "multi_choice": ["red", "blue", "green", "white"], "answer": 0,
     "question_relation": "View", "question_type": "Which"},
    {"id": 3, "video_name": "xyz123_000000", "video_id": 13, "question_text": "Where does the sound come from?",
     "multi_choice": ["dog", "cat", "car", "train"], "answer": 3,
     "question_relation": "Sound", "question_type": "Come From"},
    {"id": 4, "video_name": "gone_000010", "video_id": 14, "question_text": "What makes the sound in the video?",
     "multi_choice": ["a", "b", "c", "d"], "answer": 1, "question_relation": "Sound", "question_type": "Which"},
    {"id": 5, "video_name": "Colour_000020", "video_id": 15, "question_text": "What colour is the dog?",
     "multi_choice": ["a", "b", "c", "d"], "answer": 0, "question_relation": "Both", "question_type": "Which"},
]  # fmt: skip


@pytest.fixture
def avqa(tmp_path):
    """A train_qa.json with five questions and audio for all but id 4, under three naming schemes."""
    qa = tmp_path / "train_qa.json"
    qa.write_text(json.dumps(ITEMS))
    audio = tmp_path / "wavs"
    audio.mkdir()
    tone = encode_wav(0.3 * np.sin(np.linspace(0, 2000, 16000)).astype(np.float32))
    (audio / "-HG3Omg_89c_30.wav").write_bytes(tone)  # R1-AQA's <ytid>_<int start>
    (audio / "abc_def_105.wav").write_bytes(tone)
    (audio / "xyz123_000000.wav").write_bytes(tone)  # exact video_name
    (audio / "Colour_20.wav").write_bytes(tone)
    return qa, audio


def rows_of(report, **options):
    return {r["extra_info"]["id"]: r for r in build_avqa(report, **options)}


def test_r1aqa_file_names_come_first_then_the_exact_video_name():
    names = audio_candidates("-HG3Omg_89c_000030")
    assert names[0] == "-HG3Omg_89c_30.wav"
    assert "-HG3Omg_89c_000030.wav" in names and "-HG3Omg_89c_30.flac" in names


def test_questions_say_audio_instead_of_video_and_answers_are_choice_text(avqa):
    qa, audio = avqa
    rows = rows_of(BuildReport("avqa"), qa=[qa], audio_dir=audio)
    first = rows["1"]
    assert first["question"] == "What happened in the audio?"
    assert first["answer"] == "Sailboat set sail" == first["reward_model"]["ground_truth"]
    assert first["data_source"] == "avqa"
    assert first["audios"][0]["path"].endswith("-HG3Omg_89c_30.wav")
    assert first["extra_info"]["split"] == "train" and first["extra_info"]["sub_category"] == "Happening"
    assert json.loads(first["extra_info"]["meta"])["question_relation"] == "Both"
    assert rows["3"]["answer"] == "train"


def test_missing_audio_is_counted_and_listed_not_fatal(avqa):
    qa, audio = avqa
    report = BuildReport("avqa")
    rows = rows_of(report, qa=[qa], audio_dir=audio)
    assert sorted(rows) == ["1", "2", "3", "5"]
    assert report.skipped == {"audio file not found": 1}
    assert "gone_10.wav" in report.summary()


def test_missing_audio_is_fatal_under_strict(avqa):
    qa, audio = avqa
    with pytest.raises(BuildError, match="item 4.*gone_10.wav"):
        rows_of(BuildReport("avqa", strict=True), qa=[qa], audio_dir=audio)


def test_missing_audio_can_be_kept_and_is_still_reported(avqa):
    qa, audio = avqa
    report = BuildReport("avqa")
    rows = rows_of(report, qa=[qa], audio_dir=audio, allow_missing_audio=True)
    assert len(rows) == 5 and report.rows_skipped == 0
    assert report.warnings == {"audio file not found (kept: --allow-missing-audio)": 1}


def test_view_and_color_filters_drop_and_count_their_questions(avqa):
    qa, audio = avqa
    report = BuildReport("avqa", strict=True)  # deliberate filters are not problems, even under strict
    rows = rows_of(report, qa=[qa], audio_dir=audio, drop_view=True, drop_color=True, allow_missing_audio=True)
    assert sorted(rows) == ["1", "3", "4"]
    assert report.skipped == {"--drop-view: visual-only question": 1, "--drop-color: question mentions color": 1}


def test_r1aqa_jsonl_with_audio_path_is_accepted(avqa, tmp_path):
    qa, audio = avqa
    item = dict(ITEMS[2], dataset_name="AVQA", audio_path=str(audio / "xyz123_000000.wav"))
    jsonl = tmp_path / "train_qa.data"
    jsonl.write_text(json.dumps(item) + "\n\n" + json.dumps(dict(item, id=9, audio_path="wavs/abc_def_105.wav")))
    rows = rows_of(BuildReport("avqa"), qa=[jsonl])
    assert sorted(rows) == ["3", "9"]
    assert rows["9"]["audios"][0]["path"].endswith("abc_def_105.wav")


def test_an_answer_index_out_of_range_is_skipped_with_its_reason(avqa, tmp_path):
    _, audio = avqa
    qa = tmp_path / "val_qa.json"
    qa.write_text(json.dumps([dict(ITEMS[0], answer=4)]))
    report = BuildReport("avqa")
    assert rows_of(report, qa=[qa], audio_dir=audio) == {}
    assert report.skipped == {"answer index out of range": 1}


def test_a_malformed_question_file_names_the_file_and_line(tmp_path):
    bad = tmp_path / "train_qa.jsonl"
    bad.write_text('{"id": 1}\n{oops\n')
    with pytest.raises(BuildError, match=r"train_qa.jsonl:2: not valid JSON"):
        rows_of(BuildReport("avqa"), qa=[bad])


def test_embedded_audio_decodes_like_the_file(avqa, tmp_path):
    qa, audio = avqa
    report = build_dataset("avqa", tmp_path / "avqa.parquet", qa=[qa], audio_dir=audio, embed_audio=True)
    assert report.rows_written == 4
    back = read_parquet(tmp_path / "avqa.parquet")
    assert back[0]["audios"][0]["bytes"] == (audio / "-HG3Omg_89c_30.wav").read_bytes()
    np.testing.assert_array_equal(load_audio(back[0]["audios"][0]), load_audio(audio / "-HG3Omg_89c_30.wav"))
