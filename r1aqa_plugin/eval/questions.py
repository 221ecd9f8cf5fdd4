"""Dataset parquet rows (the data contract) -> MMAU-format items to score, plus the audio each one needs.

An item carries MMAU's own keys (id, question, choices, answer, task, difficulty, sub-category, category,
dataset, split, audio_id where known) and data_source, so a predictions file written from it runs through the
official evaluation.py unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from r1aqa_plugin.eval.backends import Request
from r1aqa_plugin.prompts import render_prompt

# extra_info field -> MMAU item key
_EXTRA_TO_MMAU = {
    "id": "id",
    "task": "task",
    "difficulty": "difficulty",
    "sub_category": "sub-category",
    "category": "category",
    "source_dataset": "dataset",
    "split": "split",
}


@dataclass
class Question:
    """One item to ask: its MMAU-format dict and its audio source (a {path, bytes} dict)."""

    item: dict[str, Any]
    audio: Any


def _plain(value: Any) -> Any:
    # pyarrow/pandas hand lists over as numpy arrays; items must be JSON-serialisable.
    return value.tolist() if hasattr(value, "tolist") else value


def row_to_question(row: dict[str, Any], index: int) -> Question:
    """One contract row as a Question; a row without exactly one audio clip or with a bad answer is an error."""
    extra = dict(row.get("extra_info") or {})
    rid = extra.get("id") or f"row{index}"
    choices = [str(c) for c in _plain(row["choices"])]
    if row["answer"] not in choices:
        raise ValueError(f"row {rid}: answer {row['answer']!r} is not one of its choices {choices}")
    audios = list(_plain(row.get("audios")) or [])
    if len(audios) != 1:
        raise ValueError(f"row {rid}: evaluation takes exactly one audio clip per question, found {len(audios)}")
    item: dict[str, Any] = {"id": str(rid), "data_source": row["data_source"], "question": row["question"],
                            "choices": choices, "answer": row["answer"]}
    for source, key in _EXTRA_TO_MMAU.items():
        if extra.get(source) is not None and key not in item:
            item[key] = _plain(extra[source])
    if "task" not in item:  # data_source is "<dataset>/<task>" by contract
        item["task"] = row["data_source"].rsplit("/", 1)[-1]
    audio = audios[0]
    if isinstance(audio, dict) and audio.get("path"):
        item["audio_id"] = audio["path"]
    return Question(item=item, audio=audio)


def load_questions(path: str | os.PathLike[str]) -> list[Question]:
    """Read a dataset parquet into Questions (in file order)."""
    import pandas as pd

    frame = pd.read_parquet(path)
    missing = {"data_source", "question", "choices", "answer", "audios"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: not a dataset parquet, columns {sorted(missing)} are missing")
    return [row_to_question(row, i) for i, row in enumerate(frame.to_dict("records"))]


def build_requests(items: list[dict[str, Any]], audios: list[Any], prompt: str) -> list[Request]:
    """Requests for items (their possibly reordered choices) with the named prompt template."""
    return [
        Request(render_prompt(prompt, item["question"], item["choices"]), audio) for item, audio in zip(items, audios)
    ]
