"""`r1aqa <verb>`: the command-line front door.

Each verb lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported only to build their sub-parser, and heavy imports (torch, transformers, verl) happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "quickstart": ("r1aqa_plugin.quickstart", "build a tiny model + synthetic data and run the smallest real job"),
    "make-model": ("r1aqa_plugin.models.qwen2_audio.builder", "write a Qwen2-Audio checkpoint folder, offline"),
    "doctor": ("r1aqa_plugin.models.qwen2_audio.doctor", "check versions and the state of every verl/vLLM hook"),
    "data": ("r1aqa_plugin.data.cli", "list or build AQA datasets as verl parquet"),
    "eval": ("r1aqa_plugin.eval.cli", "generate answers and score them with the official MMAU rule"),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one sub-parser per verb."""
    parser = argparse.ArgumentParser(prog="r1aqa", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, (module_name, help_text) in VERBS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # one broken verb must not take the others down; it fails loudly when used
            p = sub.add_parser(verb, help=f"{help_text} [unavailable: {exc}]")
            p.set_defaults(_module=None, _import_error=exc)
            continue
        p = sub.add_parser(verb, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``r1aqa`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args._module is None:
        print(f"r1aqa {args.verb}: cannot import its module: {args._import_error}", file=sys.stderr)
        return 2
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
