"""Pick the GRPO checkpoint to evaluate after training: the saved step with the best validation on the trained tasks.

    python examples/learning_proof/pick_checkpoint.py --ckpt WORK/ckpt --tasks beep_count,instrument

Prints the step on stdout and why on stderr. The scores come from the validation history that the recipe's
checkpoint callback (``r1aqa_plugin.checkpointing.BestMMAUCheckpoint``) writes beside the checkpoints; its own
``best`` link averages every validated task, and here the control tasks (validated, never trained) must not
choose. The validation set picks the checkpoint and the held-out test set scores it, so the pick leaks nothing into
the reported accuracy. Why not the last checkpoint: in the seventh GPU run (docs/learning.md) validation peaked at
step 40 (95.0% and 92.5%) and fell to 80.0% and 82.5% at step 45, the last step saved before the time limit.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from r1aqa_plugin.checkpointing import HISTORY_JSONL, best_saved_validation

STEP_DIR = re.compile(r"^global_step_(\d+)$")


def saved_steps(ckpt: Path) -> list[int]:
    """Steps with an actor checkpoint under ``ckpt`` (verl's ``global_step_N/actor``), ascending."""
    if not ckpt.is_dir():
        raise FileNotFoundError(f"no checkpoint folder {ckpt}")
    return sorted(int(m.group(1)) for d in ckpt.iterdir()
                  if (m := STEP_DIR.match(d.name)) and (d / "actor").is_dir())


def pick(ckpt: Path, tasks: list[str]) -> tuple[int, str]:
    """The step to evaluate and why: the best validated saved step on ``tasks``, else the last saved one."""
    saved = saved_steps(ckpt)
    if not saved:
        raise FileNotFoundError(f"no global_step_N/actor checkpoint in {ckpt}")
    best = best_saved_validation(ckpt, tasks)
    if best is None:
        return saved[-1], f"no validation of a saved step in {ckpt / HISTORY_JSONL}; the last saved, step {saved[-1]}"
    if best["step"] not in saved:
        raise FileNotFoundError(f"step {best['step']} validated best on {tasks} but {ckpt}/global_step_"
                                f"{best['step']}/actor is gone")
    why = (f"step {best['step']}: mean validation accuracy {100 * best['score']:.1f}% on {','.join(tasks)} "
           f"(last saved: step {saved[-1]})")
    return best["step"], why


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", type=Path, required=True, help="verl's trainer.default_local_dir")
    ap.add_argument("--tasks", required=True, help="comma-separated training tasks (or task families)")
    a = ap.parse_args(argv)
    step, why = pick(a.ckpt, [t for t in a.tasks.split(",") if t])
    print(f"checkpoint: {why}", file=sys.stderr)
    print(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
