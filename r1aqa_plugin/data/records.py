"""The parquet row contract (one row = one question), its validation, parquet I/O and the build report.

A row is a plain dict with the columns below; ``make_record`` builds one with the stable ``extra_info``
schema, ``validate_record`` checks it, and ``write_parquet`` streams rows to disk in row groups so that a
50k-row synthetic set with embedded wav bytes never has to sit in memory.

| column       | type                                   |
|--------------|----------------------------------------|
| data_source  | str (``avqa``, ``mmau-test-mini/sound``, ``synthetic-aqa/speech``, ...) |
| question     | str                                    |
| choices      | list[str], in the dataset's order      |
| answer       | str, one of ``choices``                |
| audios       | list[{path: str|None, bytes: binary|None}] (original encoding) |
| reward_model | {ground_truth: answer, style: "rule"}  |
| extra_info   | {id, index, task, sub_category, category, difficulty, source_dataset, split, version, meta} |

``extra_info.meta`` is a JSON object string holding dataset-specific fields (AVQA's question_relation,
the synthetic generator's parameters, ...), so the parquet schema is the same for every dataset.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COLUMNS = ("data_source", "question", "choices", "answer", "audios", "reward_model", "extra_info")
EXTRA_INFO_FIELDS = (
    "id", "index", "task", "sub_category", "category", "difficulty", "source_dataset", "split", "version", "meta",
)  # fmt: skip
MIN_CHOICES = 2
EXAMPLES_PER_REASON = 5


class RecordError(ValueError):
    """A row breaks the contract; ``reason`` is a short category used for counting in the build report."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BuildError(RuntimeError):
    """A build cannot go on (a problem under ``--strict``, an unreadable input file, ...)."""


def make_record(
    *,
    data_source: str,
    question: str,
    choices: Sequence[str],
    answer: str,
    audios: Sequence[Mapping[str, Any]],
    id: str,
    index: int,
    source_dataset: str,
    task: str | None = None,
    sub_category: str | None = None,
    category: str | None = None,
    difficulty: str | None = None,
    split: str | None = None,
    version: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one row with every column and the full ``extra_info`` schema filled in."""
    return {
        "data_source": data_source,
        "question": question,
        "choices": list(choices),
        "answer": answer,
        "audios": [{"path": a.get("path"), "bytes": a.get("bytes")} for a in audios],
        "reward_model": {"ground_truth": answer, "style": "rule"},
        "extra_info": {
            "id": str(id),
            "index": int(index),
            "task": task,
            "sub_category": sub_category,
            "category": category,
            "difficulty": difficulty,
            "source_dataset": source_dataset,
            "split": split,
            "version": version,
            "meta": json.dumps(dict(meta or {}), sort_keys=True, ensure_ascii=False),
        },
    }


def row_name(row: Mapping[str, Any]) -> str:
    """A short name for a row in messages: its id, else its question's start."""
    extra = row.get("extra_info") or {}
    if extra.get("id"):
        return f"id={extra['id']}"
    return f"question={str(row.get('question', ''))[:40]!r}"


def validate_record(row: Mapping[str, Any], where: str) -> list[str]:
    """Raise RecordError (naming ``where`` and the row) if ``row`` breaks the contract; return non-fatal findings.

    Fatal: a missing column, empty question, fewer than 2 choices, a non-string or empty choice, an answer
    that is not among the choices, a ground truth that differs from the answer, no audio, an audio item with
    neither path nor bytes. Non-fatal (returned as reasons, for the report to count): duplicate choices and an
    answer string that appears more than once among the choices. MMAU test-mini has 27 and 16 of those, and
    it is a benchmark, so it must build unchanged.
    """
    name = f"{where}: row {row_name(row)}"

    def fail(reason: str, detail: str) -> RecordError:
        return RecordError(reason, f"{name}: {detail}")

    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise fail("missing column", f"missing column(s) {missing}")
    if not isinstance(row["data_source"], str) or not row["data_source"]:
        raise fail("empty data_source", "data_source must be a non-empty string")
    if not isinstance(row["question"], str) or not row["question"].strip():
        raise fail("empty question", "question is empty")
    choices = row["choices"]
    if not isinstance(choices, (list, tuple)) or len(choices) < MIN_CHOICES:
        raise fail("too few choices", f"needs at least {MIN_CHOICES} choices, got {choices!r}")
    if any(not isinstance(c, str) or not c.strip() for c in choices):
        raise fail("empty choice", f"every choice must be a non-empty string, got {choices!r}")
    if row["answer"] not in choices:
        raise fail("answer not among choices", f"answer {row['answer']!r} is not one of {list(choices)!r}")
    if (row["reward_model"] or {}).get("ground_truth") != row["answer"]:
        raise fail("ground truth mismatch", "reward_model.ground_truth differs from answer")
    audios = row["audios"]
    if not audios:
        raise fail("no audio", "has no audio item")
    for item in audios:
        if not item or (item.get("path") is None and item.get("bytes") is None):
            raise fail("empty audio item", f"audio item {item!r} has neither path nor bytes")
    findings = []
    if len(set(choices)) < len(choices):
        findings.append("duplicate choices")
        if list(choices).count(row["answer"]) > 1:
            findings.append("answer appears more than once in choices")
    return findings


@dataclass
class BuildReport:
    """What a build did: rows written, rows skipped (why, with examples), findings, notes, per-source counts.

    With ``strict=True`` a skip marked as a problem (missing audio, invalid row) raises BuildError instead of
    being counted; deliberate filters (``--drop-view``) are never problems.
    """

    dataset: str
    strict: bool = False
    rows_written: int = 0
    expected_rows: int | None = None
    skipped: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    per_source: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def _example(self, key: str, example: str) -> None:
        shown = self.examples.setdefault(key, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append(example)

    def skip(self, reason: str, example: str, *, problem: bool = True) -> None:
        """Count one dropped row under ``reason`` (raises BuildError under ``strict`` when it is a problem)."""
        if problem and self.strict:
            raise BuildError(f"{self.dataset}: {reason}: {example} (--strict)")
        self.skipped[reason] += 1
        self._example(f"skip:{reason}", example)

    def warn(self, reason: str, example: str) -> None:
        """Count one kept row that has something worth knowing (duplicate choices, a normalised field, ...)."""
        self.warnings[reason] += 1
        self._example(f"warn:{reason}", example)

    def note(self, message: str) -> None:
        """Record a build-level message (a skipped task family, an unexpected file version, ...)."""
        if message not in self.notes:
            self.notes.append(message)

    def wrote(self, row: Mapping[str, Any]) -> None:
        """Count one written row."""
        self.rows_written += 1
        self.per_source[row["data_source"]] += 1

    @property
    def rows_skipped(self) -> int:
        """Rows dropped for any reason."""
        return sum(self.skipped.values())

    def summary(self) -> str:
        """A human-readable multi-line summary (what the CLI prints)."""
        lines = [f"dataset {self.dataset}: {self.rows_written} rows written, {self.rows_skipped} skipped"]
        for title, counter, prefix in (("skipped", self.skipped, "skip"), ("kept, but note", self.warnings, "warn")):
            if counter:
                lines.append(f"  {title}:")
                for reason, n in counter.most_common():
                    lines.append(f"    {n:7d}  {reason}")
                    for ex in self.examples.get(f"{prefix}:{reason}", []):
                        lines.append(f"             e.g. {ex}")
        if self.per_source:
            lines.append("  rows per data_source:")
            for source, n in sorted(self.per_source.items()):
                lines.append(f"    {n:7d}  {source}")
        for message in self.notes:
            lines.append(f"  note: {message}")
        return "\n".join(lines)


def _schema() -> Any:
    import pyarrow as pa

    extra = pa.struct(
        [("index", pa.int64()) if name == "index" else (name, pa.string()) for name in EXTRA_INFO_FIELDS]
    )
    return pa.schema(
        [
            ("data_source", pa.string()),
            ("question", pa.string()),
            ("choices", pa.list_(pa.string())),
            ("answer", pa.string()),
            ("audios", pa.list_(pa.struct([("path", pa.string()), ("bytes", pa.binary())]))),
            ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
            ("extra_info", extra),
        ]
    )


def write_parquet(records: Iterable[Mapping[str, Any]], path: str | os.PathLike, *, rows_per_group: int = 256) -> int:
    """Stream rows into a parquet file (written to a temporary name, renamed when complete); return the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    schema = _schema()
    n = 0
    batch: list[Mapping[str, Any]] = []
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for row in records:
                batch.append({c: row[c] for c in COLUMNS})
                if len(batch) >= rows_per_group:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    n += len(batch)
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def read_parquet(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a parquet file written by ``write_parquet`` back into row dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def iter_parquet(path: str | os.PathLike, *, batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """Yield rows one by one without loading the whole file (for large sets with embedded audio)."""
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        yield from batch.to_pylist()


def file_audio(
    report: BuildReport, where: str, path: Path | None, shown: str, *, allow_missing: bool, embed: bool
) -> dict[str, Any] | None:
    """The ``audios`` entry for an audio file; None (counted as skipped) when it is missing and that is not allowed."""
    if path is None:
        if not allow_missing:
            report.skip("audio file not found", f"{where}: {shown}")
            return None
        report.warn("audio file not found (kept: --allow-missing-audio)", f"{where}: {shown}")
    return {"path": str(path or shown), "bytes": path.read_bytes() if embed and path is not None else None}
