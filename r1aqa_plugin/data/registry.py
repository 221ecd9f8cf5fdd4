"""Dataset builders by name: one dict, one decorator, and the loop that turns a builder into a parquet file.

A builder is ``fn(report: BuildReport, **options) -> Iterator[row]``. It yields contract rows (see
``records.py``) and reports every row it drops through ``report.skip``. Its command-line options are declared
next to it with ``arg(...)`` so that ``r1aqa data build NAME --help`` shows them; the builder's own keyword
defaults are the only defaults (the CLI passes only the options a user gave).
"""

from __future__ import annotations

import argparse
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from r1aqa_plugin.data.records import BuildReport, RecordError, validate_record, write_parquet

Builder = Callable[..., Iterator[dict[str, Any]]]


@dataclass(frozen=True)
class ArgSpec:
    """One ``argparse.add_argument`` call, kept as data until a parser needs it."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any]


def arg(*flags: str, **kwargs: Any) -> ArgSpec:
    """Declare a builder option with ``add_argument``'s signature."""
    return ArgSpec(flags, kwargs)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its builder, one-line description and command-line options."""

    name: str
    builder: Builder
    description: str
    arguments: tuple[ArgSpec, ...] = field(default=())

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this dataset's options to ``parser``; absent options stay absent so builder defaults apply."""
        defaults = {
            name: p.default
            for name, p in inspect.signature(self.builder).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        for spec in self.arguments:
            kwargs = dict(spec.kwargs)
            dest = kwargs.get("dest") or spec.flags[0].lstrip("-").replace("-", "_")
            default = defaults.get(dest)
            if default is not None and default is not False and default != () and "help" in kwargs:
                kwargs["help"] += f" (default: {default})"
            kwargs.setdefault("default", argparse.SUPPRESS)
            parser.add_argument(*spec.flags, **kwargs)

    def option_names(self) -> list[str]:
        """The keyword names this dataset's options arrive under."""
        names = []
        for spec in self.arguments:
            names.append(spec.kwargs.get("dest") or spec.flags[0].lstrip("-").replace("-", "_"))
        return names


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str, *, description: str, arguments: tuple[ArgSpec, ...] | list[ArgSpec] = (), **fixed: Any
) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name``; ``fixed`` keyword options are bound (for variants of one builder)."""

    def wrap(builder: Builder) -> Builder:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered (by {DATASETS[name].builder.__module__})")
        target = builder
        if fixed:

            def target(report: BuildReport, **options: Any) -> Iterator[dict[str, Any]]:
                return builder(report, **fixed, **options)

            target.__signature__ = inspect.signature(builder)  # type: ignore[attr-defined]
            target.__name__ = builder.__name__
        DATASETS[name] = DatasetSpec(name, target, description, tuple(arguments))
        return builder

    return wrap


def get_dataset(name: str) -> DatasetSpec:
    """Look up a registered dataset; the KeyError lists the available names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}") from None


def iter_dataset(
    name: str, report: BuildReport, *, limit: int | None = None, **options: Any
) -> Iterator[dict[str, Any]]:
    """Run a builder and yield only valid rows (at most ``limit``); invalid rows are skipped and counted."""
    spec = get_dataset(name)
    written = 0
    for row in spec.builder(report, **options):
        if limit is not None and written >= limit:
            break
        try:
            findings = validate_record(row, name)
        except RecordError as exc:
            report.skip(f"invalid row: {exc.reason}", str(exc))
            continue
        for finding in findings:
            report.warn(finding, f"{row['extra_info']['id']}: choices={row['choices']!r}")
        written += 1
        report.wrote(row)
        yield row


def build_dataset(
    name: str,
    out: str | os.PathLike,
    *,
    limit: int | None = None,
    strict: bool = False,
    progress: bool = False,
    **options: Any,
) -> BuildReport:
    """Build dataset ``name`` into the parquet file ``out`` and return the report."""
    report = BuildReport(dataset=name, strict=strict)
    rows: Iterator[dict[str, Any]] = iter_dataset(name, report, limit=limit, **options)
    if progress:
        rows = _with_progress(rows, report, limit)
    write_parquet(rows, out)
    return report


def _with_progress(rows: Iterator[dict[str, Any]], report: BuildReport, limit: int | None) -> Iterator[dict[str, Any]]:
    from tqdm import tqdm

    with tqdm(desc=report.dataset, unit="row") as bar:
        for row in rows:
            # builders learn their size only once they have read their input, i.e. after the first row
            known = [x for x in (report.expected_rows, limit) if x is not None]
            total = min(known) if known else None
            if total is not None and bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update()
            yield row
