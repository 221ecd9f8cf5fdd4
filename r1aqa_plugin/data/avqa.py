"""AVQA (Yang et al., ACM MM 2022) question files + extracted audio -> rows, the way R1-AQA trains on them.

Input is AVQA's ``train_qa.json`` / ``val_qa.json`` (a JSON list) or R1-AQA's JSONL (the same dicts plus
``audio_path``). Each item has ``id, video_name, video_id, question_text, multi_choice, answer (index),
question_relation (View|Sound|Both), question_type``. As in R1-AQA, every lowercase "video" in the question
becomes "audio" (a plain ``str.replace``) and the answer is ``multi_choice[answer]``.

Audio files: R1-AQA names the clip of ``-HG3Omg_89c_000030`` ``-HG3Omg_89c_30.wav`` (YouTube id + start
second as an integer); ``<video_name>.<ext>`` is accepted too, for wav/flac/mp3/ogg.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from r1aqa_plugin.data.records import BuildError, BuildReport, file_audio, make_record
from r1aqa_plugin.data.registry import arg, register_dataset

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
# Ke-Omni-R drops these for audio-only training; both spellings, whole words only ("colorful" too).
COLOR_PATTERN = re.compile(r"\bcolou?r", re.IGNORECASE)
REQUIRED_KEYS = ("id", "question_text", "multi_choice", "answer")


def read_qa_file(path: Path) -> list[dict[str, Any]]:
    """Read an AVQA JSON list or an R1-AQA JSONL file (one dict per line) into a list of dicts."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BuildError(f"cannot read AVQA question file {path}: {exc}") from exc
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BuildError(f"{path}: not valid JSON ({exc})") from exc
    else:
        items = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BuildError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
    if not all(isinstance(item, dict) for item in items):
        raise BuildError(f"{path}: expected a list of objects (AVQA *_qa.json) or one object per line (JSONL)")
    return items


def audio_candidates(video_name: str) -> list[str]:
    """File names an AVQA clip may have, R1-AQA's ``<ytid>_<int start>`` first."""
    stems = []
    ytid, sep, start = video_name.rpartition("_")
    if sep and start.isdigit():
        stems.append(f"{ytid}_{int(start)}")
    stems.append(video_name)
    return [stem + ext for stem in dict.fromkeys(stems) for ext in AUDIO_EXTENSIONS]


def split_from_filename(path: Path) -> str | None:
    """``train_qa.json`` -> ``train``, ``val_qa.json`` -> ``val``; None when the name says nothing."""
    match = re.match(r"(train|val|test)", path.name)
    return match.group(1) if match else None


class AudioIndex:
    """File names under an audio folder (listed once: 40k ``exists`` calls per candidate would be slow)."""

    def __init__(self, audio_dir: Path | None) -> None:
        self.audio_dir = audio_dir
        self.names: dict[str, Path] = {}
        if audio_dir is not None:
            if not audio_dir.is_dir():
                raise BuildError(f"audio folder not found: {audio_dir}")
            self.names = {p.name: p for p in audio_dir.iterdir() if p.is_file()}

    def find(self, names: Sequence[str]) -> Path | None:
        """The first of ``names`` present in the folder."""
        for name in names:
            if name in self.names:
                return self.names[name]
        return None


def _resolve_audio(item: dict[str, Any], qa_path: Path, index: AudioIndex) -> tuple[Path | None, str]:
    """Where this item's audio is, and the path to report when it is missing."""
    given = item.get("audio_path")
    if given:
        candidates = [Path(given)]
        if not Path(given).is_absolute():
            candidates += [qa_path.parent / given]
            if index.audio_dir is not None:
                candidates.insert(0, index.audio_dir / given)
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve(), str(candidate)
        found = index.find([Path(given).name])
        return (found.resolve() if found else None), str(given)
    names = audio_candidates(str(item.get("video_name", "")))
    found = index.find(names)
    shown = str(index.audio_dir / names[0]) if index.audio_dir is not None else names[0]
    return (found.resolve() if found else None), shown


@register_dataset(
    "avqa",
    description="AVQA train/val questions + extracted audio, as R1-AQA trains on them (video -> audio)",
    arguments=(
        arg("--qa", type=Path, nargs="+", required=True, help="AVQA train_qa.json / val_qa.json or R1-AQA JSONL"),
        arg("--audio-dir", type=Path, help="folder of extracted clips (<ytid>_<start>.wav or <video_name>.wav)"),
        arg("--split", help="split name to store (default: from the file name, train_qa -> train)"),
        arg("--drop-view", action="store_true", help="drop question_relation == 'View' (visual-only) questions"),
        arg("--drop-color", action="store_true", help="drop questions that mention color/colour"),
        arg(
            "--allow-missing-audio",
            "--no-audio-check",
            dest="allow_missing_audio",
            action="store_true",
            help="keep rows whose audio file is absent (still counted and listed in the report)",
        ),
        arg("--embed-audio", action="store_true", help="store the file bytes in the parquet, not only the path"),
    ),
)
def build_avqa(
    report: BuildReport,
    *,
    qa: Sequence[Path],
    audio_dir: Path | None = None,
    split: str | None = None,
    drop_view: bool = False,
    drop_color: bool = False,
    allow_missing_audio: bool = False,
    embed_audio: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield one row per AVQA question (see the module docstring for the conversion)."""
    index = AudioIndex(Path(audio_dir) if audio_dir is not None else None)
    files = [(Path(p), read_qa_file(Path(p))) for p in ([qa] if isinstance(qa, (str, Path)) else qa)]
    report.expected_rows = sum(len(items) for _, items in files)
    position = 0
    for qa_path, items in files:
        file_split = split or split_from_filename(qa_path)
        for item in items:
            position += 1
            where = f"{qa_path.name} item {item.get('id', '#' + str(position))}"
            missing = [k for k in REQUIRED_KEYS if k not in item]
            if missing:
                report.skip("item lacks AVQA keys", f"{where}: missing {missing}")
                continue
            choices = [str(c) for c in item["multi_choice"]] if isinstance(item["multi_choice"], list) else None
            answer_index = item["answer"]
            if isinstance(answer_index, str) and answer_index.strip().isdigit():
                answer_index = int(answer_index)
            if not choices or not isinstance(answer_index, int) or not 0 <= answer_index < len(choices):
                report.skip("answer index out of range", f"{where}: answer={item['answer']!r}, choices={choices!r}")
                continue
            relation = item.get("question_relation")
            if drop_view and relation == "View":
                report.skip("--drop-view: visual-only question", where, problem=False)
                continue
            if drop_color and COLOR_PATTERN.search(str(item["question_text"])):
                report.skip("--drop-color: question mentions color", where, problem=False)
                continue
            audio_path, shown = _resolve_audio(item, qa_path, index)
            audio = file_audio(report, where, audio_path, shown, allow_missing=allow_missing_audio, embed=embed_audio)
            if audio is None:
                continue
            yield make_record(
                data_source="avqa",
                question=str(item["question_text"]).replace("video", "audio"),
                choices=choices,
                answer=choices[answer_index],
                audios=[audio],
                id=str(item["id"]),
                index=position - 1,
                source_dataset="AVQA",
                task="sound",
                sub_category=item.get("question_type"),
                split=file_split,
                meta={
                    k: item[k] for k in ("video_name", "video_id", "question_relation", "question_type") if k in item
                },
            )
