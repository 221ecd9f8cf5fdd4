"""`r1aqa data list|build`: every dataset listed, options per dataset, a summary, non-zero exit on failure."""

from __future__ import annotations

import pytest

from r1aqa_plugin.cli import main
from r1aqa_plugin.data import read_parquet


def test_list_names_every_dataset_with_its_description(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("avqa", "mmau-test-mini", "mmau-test-mini-v1", "synthetic-aqa"):
        assert f"\n{name} " in "\n" + out
    assert "R1-AQA reported on" in out


def test_build_help_shows_the_dataset_s_own_options(capsys):
    with pytest.raises(SystemExit):
        main(["data", "build", "avqa", "--help"])
    out = capsys.readouterr().out
    assert "--drop-view" in out and "--audio-dir" in out and "--out" in out


def test_build_writes_parquet_and_prints_the_summary(tmp_path, capsys):
    out_file = tmp_path / "syn.parquet"
    code = main(["data", "build", "synthetic-aqa", "--size", "10", "--tasks", "sound", "--limit", "7",
                 "--no-progress", "--out", str(out_file)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "7 rows written, 0 skipped" in printed and "7  synthetic-aqa/sound" in printed
    assert len(read_parquet(out_file)) == 7


def test_a_missing_input_file_exits_non_zero_naming_the_file(tmp_path, capsys):
    code = main(["data", "build", "mmau-test-mini", "--json", str(tmp_path / "absent.json"), "--no-progress",
                 "--out", str(tmp_path / "m.parquet")])  # fmt: skip
    assert code == 1
    assert "absent.json" in capsys.readouterr().err
    assert not (tmp_path / "m.parquet").exists()


def test_a_build_that_writes_nothing_exits_non_zero(tmp_path, capsys):
    qa = tmp_path / "train_qa.json"
    qa.write_text('[{"id": 1, "video_name": "a_000001", "question_text": "q?", "multi_choice": ["x", "y"], "answer": 0}]')
    code = main(["data", "build", "avqa", "--qa", str(qa), "--audio-dir", str(tmp_path), "--no-progress",
                 "--out", str(tmp_path / "a.parquet")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "1  audio file not found" in captured.out and "no rows written" in captured.err
