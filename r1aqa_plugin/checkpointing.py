"""Best checkpoint by validation accuracy, for verl 0.9.1's ``trainer.checkpoint_callback_class``.

R1-AQA saves every 100 steps and reports the best step by MMAU test-mini accuracy (issue #14: the best step
moves between runs, anywhere in 100-1000). This callback keeps that choice in the checkpoint folder::

    checkpoints/<project>/<experiment>/
      global_step_100/ ... global_step_1000/      # verl's checkpoints
      best -> global_step_500                     # the highest validation accuracy so far
      best_checkpoint.json                        # {"step", "score", "checkpoint_dir", "metrics"}
      val_accuracy.jsonl                          # one line per validation: step, score, per-source accuracy

Recipe::

    trainer:
      checkpoint_callback_class: r1aqa_plugin.checkpointing.BestMMAUCheckpoint

The score is the mean over validation data sources of verl's ``val-core/<data_source>/acc/mean@N`` (our
``compute_score`` returns ``acc``: the official MMAU rule). For MMAU test-mini (sources sound 333, music 334,
speech 333) this mean differs from the official item-weighted total by under 0.001.

Why it wraps ``trainer._validate``: verl calls ``on_save`` (the only callback event) right after saving step N and
*before* validating step N, and keeps no validation metrics on the trainer. So on the first ``on_save`` the
callback wraps that trainer instance's ``_validate`` to see each result; the checkpoint of step N is already on
disk when step N's validation returns. Only steps that were both saved and validated can be "best", so set
``save_freq`` to divide ``test_freq`` (the recipe uses 100 and 100).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from verl.trainer.ppo.checkpoint_callback import CheckpointCallback

logger = logging.getLogger("r1aqa.checkpointing")

# verl 0.9.1 trainer_base._val_metrics_update: f"val-core/{data_source}/{var}/{metric}", metric like mean@1.
_CORE_ACC = re.compile(r"^val-core/(?P<source>.+)/acc/mean@\d+$")
BEST_LINK = "best"
BEST_JSON = "best_checkpoint.json"
HISTORY_JSONL = "val_accuracy.jsonl"


def validation_accuracy(metrics: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
    """Mean of verl's per-data-source ``val-core/<source>/acc/mean@N`` values, and those values by source.

    >>> validation_accuracy({"val-core/mmau-test-mini/sound/acc/mean@1": 0.7,
    ...                      "val-core/mmau-test-mini/music/acc/mean@1": 0.6, "val-aux/x/score/mean@1": 1.0})
    (0.65, {'mmau-test-mini/sound': 0.7, 'mmau-test-mini/music': 0.6})
    """
    per_source = {}
    for key, value in metrics.items():
        match = _CORE_ACC.match(key)
        if match:
            per_source[match["source"]] = float(value)
    if not per_source:
        raise ValueError(
            "no 'val-core/<data_source>/acc/mean@N' in the validation metrics, so the best checkpoint cannot be "
            f"chosen; got {sorted(metrics)}. The reward function must return 'acc' (r1aqa_plugin's compute_score "
            "does), or unset trainer.checkpoint_callback_class."
        )
    return sum(per_source.values()) / len(per_source), per_source


def best_saved_validation(root: str | Path, sources: Sequence[str] = ()) -> dict[str, Any] | None:
    """The saved step with the best mean accuracy over ``sources`` in ``root``'s ``val_accuracy.jsonl``, or None.

    A data source counts when one of its ``/``-separated parts is named in ``sources`` (``beep_count`` and
    ``sound`` both name ``synthetic-aqa/sound/beep_count``); empty ``sources`` means all of them, the callback's own
    score. As in the callback, the first of equal scores wins. Why a subset: the learning proof validates tasks it
    does not train on as a control, and their accuracy must not pick the checkpoint of the tasks it trains on.
    """
    path = Path(root) / HISTORY_JSONL
    if not path.is_file():
        return None
    wanted = set(sources)
    best = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not record.get("saved"):
            continue
        accs = [acc for source, acc in record["per_source"].items() if not wanted or wanted & set(source.split("/"))]
        if not accs:
            raise ValueError(f"{path}:{n}: no validation source matches {sorted(wanted)}; logged: "
                             f"{sorted(record['per_source'])}")
        score = sum(accs) / len(accs)
        if best is None or score > best["score"]:
            best = {"step": int(record["step"]), "score": score}
    return best


class BestMMAUCheckpoint(CheckpointCallback):
    """Points ``<default_local_dir>/best`` at the saved step with the highest validation accuracy."""

    def __init__(self, config: Any = None) -> None:
        """Read the checkpoint folder from ``config.trainer.default_local_dir``; resume a previous best if any."""
        super().__init__(config)
        self.root = Path(config.trainer.default_local_dir)
        self.saved: dict[int, str] = {}
        self.best: dict[str, Any] | None = None
        self._wrapped: set[int] = set()
        previous = self.root / BEST_JSON
        if previous.is_file():
            self.best = json.loads(previous.read_text())
            logger.info("best checkpoint so far (resumed): step %s, accuracy %.4f", self.best["step"],
                        self.best["score"])

    def on_save(self, trainer: Any, global_step: int, checkpoint_dir: str, async_save: bool = False,
                **kwargs: Any) -> None:
        """Remember the saved step; on the first call, start watching this trainer's validations."""
        self.saved[int(global_step)] = str(checkpoint_dir)
        if id(trainer) not in self._wrapped:
            self._watch(trainer)
            self._wrapped.add(id(trainer))

    def _watch(self, trainer: Any) -> None:
        original: Callable[[], dict] = trainer._validate  # a bound method; verl 0.9.1 PPOTrainer._validate()

        def validate_and_track() -> dict:
            metrics = original()
            self.on_validation(int(trainer.global_steps), metrics)
            return metrics

        trainer._validate = validate_and_track

    def on_validation(self, global_step: int, metrics: Mapping[str, Any]) -> None:
        """Record one validation; move ``best`` if this step was saved and beats the best so far."""
        score, per_source = validation_accuracy(metrics)
        self.root.mkdir(parents=True, exist_ok=True)
        record = {"step": global_step, "score": score, "per_source": per_source,
                  "saved": global_step in self.saved}
        with open(self.root / HISTORY_JSONL, "a") as f:
            f.write(json.dumps(record) + "\n")
        if global_step not in self.saved:
            logger.info("validation at step %d (accuracy %.4f) has no checkpoint of that step", global_step, score)
            return
        if self.best is not None and score <= self.best["score"]:
            return
        checkpoint_dir = self.saved[global_step]
        self.best = {"step": global_step, "score": score, "checkpoint_dir": checkpoint_dir, "metrics": per_source}
        _replace_symlink(self.root / BEST_LINK, os.path.relpath(checkpoint_dir, self.root))
        tmp = self.root / (BEST_JSON + ".tmp")
        tmp.write_text(json.dumps(self.best, indent=2) + "\n")
        os.replace(tmp, self.root / BEST_JSON)
        print(f"[r1aqa] best checkpoint: step {global_step}, validation accuracy {score:.4f} -> {checkpoint_dir}")


def _replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically (a reader never sees it missing)."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)
