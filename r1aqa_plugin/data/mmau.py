"""MMAU test-mini (Sakshi113/MMAU) question JSON + audio folder -> rows, one data_source per task.

Two registered names, because scores on the two files are not comparable (the current file revised ~25% of
the questions and ~5% of the audio): ``mmau-test-mini`` is the current v05.15.25 file and
``mmau-test-mini-v1`` the file R1-AQA reported on. The JSON's ``audio_id`` is ``./test-mini-audios/<id>.wav``;
it is looked up by file name in ``--audio-dir`` first, then relative to the JSON's folder. The audio files
must come from the same MMAU version as the JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r1aqa_plugin.data.records import BuildError, BuildReport, file_audio, make_record
from r1aqa_plugin.data.registry import arg, register_dataset

# sha256 of the published test-mini files, to catch a v1 file built under the current name (or vice versa).
KNOWN_SHA256 = {
    "v05.15.25": "9f18fda99f8dbc2bc5ecd6323fb5063309f54969810b5c6f1caeb3b8d904cf1c",
    "v1": "e8cc09223b497191781756212cb616315690aaa6ea7ac359db1b65d97d1e2433",
}
DATA_SOURCE_PREFIX = {"v05.15.25": "mmau-test-mini", "v1": "mmau-test-mini-v1"}
REQUIRED_KEYS = ("id", "audio_id", "question", "choices", "answer", "task")

ARGUMENTS = (
    arg("--json", dest="json_path", type=Path, required=True, help="MMAU test-mini question file (JSON list)"),
    arg("--audio-dir", type=Path, help="folder holding test-mini-audios/*.wav (default: next to the JSON)"),
    arg(
        "--allow-missing-audio",
        "--no-audio-check",
        dest="allow_missing_audio",
        action="store_true",
        help="keep rows whose audio file is absent (still counted and listed), e.g. before downloading audio",
    ),
    arg("--embed-audio", action="store_true", help="store the file bytes in the parquet, not only the path"),
)


def read_mmau_json(path: Path) -> list[dict[str, Any]]:
    """Read an MMAU JSON list, with a clear error naming the file."""
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BuildError(f"cannot read MMAU file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise BuildError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise BuildError(f"{path}: expected a JSON list of question objects (MMAU format)")
    return items


def _normalise_category(value: Any) -> tuple[str | None, bool]:
    """MMAU gives 13 categories as ``["Reasoning"]``; return the string and whether it was a list."""
    if isinstance(value, list):
        return (", ".join(str(v) for v in value) or None), True
    return (None if value is None else str(value)), False


def _resolve_audio(audio_id: str, json_dir: Path, audio_dir: Path | None) -> tuple[Path | None, Path]:
    """Find the clip; return it (or None) and the path to report when it is missing."""
    candidates = []
    if audio_dir is not None:
        candidates += [audio_dir / Path(audio_id).name, audio_dir / audio_id]
    candidates.append(json_dir / audio_id)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve(), candidate
    return None, candidates[0]


def build_mmau(
    report: BuildReport,
    *,
    version: str,
    json_path: Path,
    audio_dir: Path | None = None,
    allow_missing_audio: bool = False,
    embed_audio: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield one row per MMAU test-mini question; ``version`` is "v05.15.25" or "v1"."""
    json_path = Path(json_path)
    try:
        digest = hashlib.sha256(json_path.read_bytes()).hexdigest()
    except OSError as exc:
        raise BuildError(f"cannot read MMAU file {json_path}: {exc}") from exc
    for known, sha in KNOWN_SHA256.items():
        if digest == sha and known != version:
            report.note(f"{json_path.name} is the MMAU {known} file, but it is being built as {version}")
    if digest not in KNOWN_SHA256.values():
        report.note(f"{json_path.name} is not a published MMAU test-mini file (sha256 {digest[:12]}...)")
    items = read_mmau_json(json_path)
    report.expected_rows = len(items)
    prefix = DATA_SOURCE_PREFIX[version]
    audio_dir = Path(audio_dir) if audio_dir is not None else None
    if audio_dir is not None and not audio_dir.is_dir():
        raise BuildError(f"audio folder not found: {audio_dir}")
    for position, item in enumerate(items):
        where = f"{json_path.name} item {item.get('id', '#' + str(position))}"
        missing = [k for k in REQUIRED_KEYS if k not in item]
        if missing:
            report.skip("item lacks MMAU keys", f"{where}: missing {missing}")
            continue
        category, was_list = _normalise_category(item.get("category"))
        if was_list:
            report.warn("category given as a list (normalised to a string)", f"{where}: {item['category']!r}")
        audio_path, shown = _resolve_audio(str(item["audio_id"]), json_path.parent, audio_dir)
        audio = file_audio(report, where, audio_path, shown, allow_missing=allow_missing_audio, embed=embed_audio)
        if audio is None:
            continue
        task = str(item["task"])
        yield make_record(
            data_source=f"{prefix}/{task}",
            question=str(item["question"]),
            choices=[str(c) for c in item["choices"]] if isinstance(item["choices"], list) else item["choices"],
            answer=str(item["answer"]),
            audios=[audio],
            id=str(item["id"]),
            index=position,
            source_dataset=item.get("dataset"),
            task=task,
            sub_category=item.get("sub-category"),
            category=category,
            difficulty=item.get("difficulty"),
            split=item.get("split"),
            version=version,
            meta={"audio_id": item["audio_id"]},
        )


register_dataset(
    "mmau-test-mini",
    description="MMAU test-mini, current v05.15.25 file (1000 questions: sound 333 / music 334 / speech 333)",
    arguments=ARGUMENTS,
    version="v05.15.25",
)(build_mmau)
register_dataset(
    "mmau-test-mini-v1",
    description="MMAU test-mini, the v1 file (2025-03-25) that R1-AQA reported on",
    arguments=ARGUMENTS,
    version="v1",
)(build_mmau)
