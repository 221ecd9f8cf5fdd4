"""Pick the GRPO checkpoint to evaluate after training: the saved step with the best validation accuracy.

    python examples/learning_proof/pick_checkpoint.py --ckpt WORK/ckpt --log grpo-1.log [--log ...] \
        --tasks beep_count,instrument

Prints the chosen step on stdout and why on stderr. The score of a step is its mean validation accuracy over the
data sources of the training tasks (a source matches when one of its ``/``-separated parts is a task name, so
``beep_count`` and ``sound`` both match ``synthetic-aqa/sound/beep_count``); ties go to the later step. Only steps
with a ``global_step_N/actor`` folder count. The validation set picks the checkpoint and the held-out test set
scores it, so the pick leaks nothing into the reported accuracy. Why not the last checkpoint: in the seventh GPU
run (docs/learning.md) validation peaked at step 40 (95.0% and 92.5%) and fell to 80.0% and 82.5% at step 45, the
last one saved before the time limit.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot import merge_logs, val_series  # noqa: E402

STEP_DIR = re.compile(r"^global_step_(\d+)$")


def saved_steps(ckpt: Path) -> list[int]:
    """Steps with an actor checkpoint under ``ckpt`` (verl's ``global_step_N/actor``), ascending."""
    if not ckpt.is_dir():
        raise FileNotFoundError(f"no checkpoint folder {ckpt}")
    return sorted(int(m.group(1)) for d in ckpt.iterdir()
                  if (m := STEP_DIR.match(d.name)) and (d / "actor").is_dir())


def step_scores(val: dict[str, list[tuple[int, float]]], tasks: list[str]) -> dict[int, float]:
    """``{step: mean validation accuracy over the sources matching tasks}``, for steps where every one is logged."""
    if not val:
        return {}
    sources = [s for s in val if set(s.split("/")) & set(tasks)]
    if not sources:
        raise ValueError(f"no validation source matches the tasks {tasks}; logged: {sorted(val)}")
    per_step: dict[int, list[float]] = {}
    for source in sources:
        for step, acc in val[source]:
            per_step.setdefault(step, []).append(acc)
    return {step: sum(accs) / len(accs) for step, accs in per_step.items() if len(accs) == len(sources)}


def best_step(scores: dict[int, float], saved: list[int]) -> tuple[int, str]:
    """The saved step with the highest score (ties: the later), or the last saved one when none was validated."""
    if not saved:
        raise ValueError("no saved checkpoint to choose from")
    scored = [s for s in saved if s in scores]
    if not scored:
        return saved[-1], f"no saved step was validated; the last saved, step {saved[-1]}"
    step = max(scored, key=lambda s: (scores[s], s))
    return step, (f"step {step}: mean validation accuracy {100 * scores[step]:.1f}% (last saved: step {saved[-1]}, "
                  f"{100 * scores[saved[-1]]:.1f}%)" if saved[-1] in scores else
                  f"step {step}: mean validation accuracy {100 * scores[step]:.1f}% (last saved, step "
                  f"{saved[-1]}, not validated)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", type=Path, required=True, help="verl's trainer.default_local_dir")
    ap.add_argument("--log", type=Path, action="append", required=True, help="verl console log (repeatable)")
    ap.add_argument("--tasks", required=True, help="comma-separated training tasks (or task families)")
    a = ap.parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t]
    val = val_series(merge_logs([p.read_text(errors="replace") for p in a.log]))
    step, why = best_step(step_scores(val, tasks), saved_steps(a.ckpt))
    print(f"checkpoint: {why}", file=sys.stderr)
    print(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
