"""Rewrite ``data_source`` of an AQA parquet to ``synthetic-aqa/<family>/<task>`` so verl logs one validation
curve per task (``val-core/synthetic-aqa/sound/pitch_order/acc/mean@1``). The reward ignores data_source.

    python examples/learning_proof/per_task_source.py val.parquet val-per-task.parquet
"""

from __future__ import annotations

import sys

import pandas as pd


def per_task(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with data_source = family/task (task = extra_info.sub_category)."""
    out = df.copy()
    out["data_source"] = [f"{src}/{info['sub_category']}" if info.get("sub_category") else src
                          for src, info in zip(df["data_source"], df["extra_info"])]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    df = per_task(pd.read_parquet(argv[0]))
    df.to_parquet(argv[1], index=False)
    print(f"{argv[1]}: {len(df)} rows; " + ", ".join(f"{k} {v}" for k, v in df["data_source"].value_counts().sort_index().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
