"""List or build AQA datasets as verl parquet files (one row per question).

examples:
  r1aqa data list
  r1aqa data build synthetic-aqa --size 2000 --tasks sound --out synthetic.parquet
  r1aqa data build mmau-test-mini --json mmau-test-mini.json --audio-dir test-mini-audios/ --out mmau.parquet
  r1aqa data build avqa --qa train_qa.json --audio-dir avqa-wavs/ --drop-view --out avqa.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from r1aqa_plugin.data.records import BuildError
from r1aqa_plugin.data.registry import DATASETS, build_dataset, get_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``list`` and ``build NAME`` (one sub-parser per registered dataset, with its own options)."""
    import r1aqa_plugin.data  # noqa: F401  (registers the built-in datasets)

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="name every registered dataset with its description")
    build = sub.add_parser("build", help="build one dataset into a parquet file")
    names = build.add_subparsers(dest="dataset", metavar="NAME", required=True)
    for name, spec in DATASETS.items():
        p = names.add_parser(name, help=spec.description, description=spec.description)
        p.add_argument("--out", type=Path, required=True, help="parquet file to write")
        p.add_argument("--limit", type=int, help="stop after this many rows")
        p.add_argument("--strict", action="store_true", help="fail on the first missing audio or invalid row")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        spec.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run ``list`` or ``build``; return the exit code (non-zero when nothing usable was written)."""
    if args.action == "list":
        width = max(len(name) for name in DATASETS)
        for name, spec in sorted(DATASETS.items()):
            print(f"{name:<{width}}  {spec.description}")
        return 0
    spec = get_dataset(args.dataset)
    options = {key: getattr(args, key) for key in spec.option_names() if hasattr(args, key)}
    try:
        report = build_dataset(
            args.dataset, args.out, limit=args.limit, strict=args.strict, progress=not args.no_progress, **options
        )
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    if report.rows_written == 0:
        print(f"error: no rows written to {args.out}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0
