"""AQADataset (data.custom_cls) inside the real verl 0.9.1 dataset machinery, on CPU."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from omegaconf import OmegaConf

from r1aqa_plugin.audio import encode_wav
from r1aqa_plugin.data.records import make_record, write_parquet

pytestmark = pytest.mark.integration


def _tone(seconds: float, sr: int = 16000) -> np.ndarray:
    return (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def _row(i: int, audio: dict, question: str = "Which animal is it?") -> dict:
    return make_record(data_source="test/sound", question=question, choices=["dog", "cat"], answer="cat",
                       audios=[audio], id=f"q{i}", index=i, source_dataset="test")


def _dataset(tmp_path, rows, processor, **data_overrides):
    from verl.trainer.ppo.utils import create_rl_dataset

    path = tmp_path / "rows.parquet"
    write_parquet(rows, path)
    config = OmegaConf.create({
        "custom_cls": {"path": "pkg://r1aqa_plugin.data.verl_dataset", "name": "AQADataset"},
        "max_prompt_length": 512, "filter_overlong_prompts": True, "audio_key": "audios", "prompt_key": "prompt",
        "cache_dir": str(tmp_path / "cache"), "shuffle": False, **data_overrides,
    })
    return create_rl_dataset([str(path)], config, processor.tokenizer, processor, is_train=True), config


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from verl.utils import hf_processor

    import r1aqa_plugin.models.qwen2_audio.verl_hooks  # noqa: F401  (what external_lib does in verl)

    return hf_processor(str(tiny_model_dir))


def test_rows_become_r1aqa_prompts_with_audio_first_and_choices_for_the_rewards(tmp_path, processor):
    ds, config = _dataset(tmp_path, [_row(0, {"path": None, "bytes": encode_wav(_tone(2.0))})], processor)
    item = ds[0]
    content = item["raw_prompt"][0]["content"]
    assert content[0]["type"] == "audio" and content[1]["type"] == "text"
    assert content[1]["text"] == ("Which animal is it? Please choose the answer from the following options: "
                                  "['dog', 'cat']. Output the final answer in <answer> </answer>.")
    assert item["extra_info"]["choices"] == ["dog", "cat"] and item["reward_model"]["ground_truth"] == "cat"
    _, _, audios = asyncio.run(type(ds).process_multi_modal_info(item["raw_prompt"], 14, config))
    assert len(audios) == 1 and audios[0].dtype == np.float32 and audios[0].shape == (32000,)


def test_prompt_template_is_chosen_in_the_config(tmp_path, processor):
    ds, _ = _dataset(tmp_path, [_row(0, {"path": None, "bytes": encode_wav(_tone(1.0))})], processor,
                     r1aqa={"prompt_template": "r1aqa_think"})
    assert "<think> </think>" in ds[0]["raw_prompt"][0]["content"][1]["text"]


def test_unknown_dataset_option_is_an_error(tmp_path, processor):
    with pytest.raises(ValueError, match="unknown option.*promt_template"):
        _dataset(tmp_path, [_row(0, {"path": None, "bytes": encode_wav(_tone(1.0))})], processor,
                 r1aqa={"promt_template": "r1aqa"})


def test_length_filter_counts_audio_tokens_and_reports_what_it_drops(tmp_path, processor, capsys):
    short = {"path": None, "bytes": encode_wav(_tone(2.0))}  # 50 audio tokens
    long = {"path": None, "bytes": encode_wav(_tone(20.0))}  # 500 audio tokens
    ds, _ = _dataset(tmp_path, [_row(0, short), _row(1, long), _row(2, short)], processor, max_prompt_length=200)
    assert len(ds) == 2
    out = capsys.readouterr().out
    assert "dropped 1 of 3 rows: longer than max_prompt_length (200)" in out and "q1:" in out


def test_filter_length_equals_the_processors_expanded_prompt(tmp_path, processor):
    audio = {"path": None, "bytes": encode_wav(_tone(3.3))}
    row = _row(0, audio)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "audio": None},
                                      {"type": "text", "text": "Which animal is it? Please choose the answer from "
                                       "the following options: ['dog', 'cat']. Output the final answer in "
                                       "<answer> </answer>."}]}], add_generation_prompt=True, tokenize=False)
    n = len(processor(text=[text], audio=[_tone(3.3)], sampling_rate=16000)["input_ids"][0])
    ds, _ = _dataset(tmp_path, [row], processor, max_prompt_length=n)
    assert len(ds) == 1
    with pytest.raises(ValueError, match="every row was dropped"):
        _dataset(tmp_path, [row], processor, max_prompt_length=n - 1)


def test_unreadable_audio_names_the_row_or_is_skipped_and_counted(tmp_path, processor, capsys):
    good = {"path": None, "bytes": encode_wav(_tone(1.0))}
    missing = {"path": str(tmp_path / "nope.wav"), "bytes": None}
    rows = [_row(0, good), _row(1, missing)]
    with pytest.raises(ValueError, match=r"row 1 \(id q1\).*nope\.wav"):
        _dataset(tmp_path, rows, processor)
    ds, _ = _dataset(tmp_path, rows, processor, r1aqa={"bad_audio": "skip"})
    assert len(ds) == 1
    assert "dropped 1 of 2 rows: unreadable audio" in capsys.readouterr().out


def test_dataset_without_processor_explains_the_missing_adapter(tmp_path, processor):
    from verl.trainer.ppo.utils import create_rl_dataset

    path = tmp_path / "rows.parquet"
    write_parquet([_row(0, {"path": None, "bytes": encode_wav(_tone(1.0))})], path)
    config = OmegaConf.create({"custom_cls": {"path": "pkg://r1aqa_plugin.data.verl_dataset", "name": "AQADataset"},
                               "cache_dir": str(tmp_path / "cache")})
    with pytest.raises(ValueError, match="external_lib"):
        create_rl_dataset([str(path)], config, processor.tokenizer, None, is_train=True)
