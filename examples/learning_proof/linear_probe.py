"""Is each synthetic-aqa task's answer readable from the audio tower's output by a linear map? (issue 8 diagnostic)

    python examples/learning_proof/linear_probe.py --model small-warm --data probe.parquet [--test-frac 0.25]

Runs the checkpoint's (frozen) audio tower on every row's clip and fits a logistic regression per task, on
(a) the tower's output averaged over the clip's tokens and (b) the averages of its first and second halves side by
side (what "which tone is higher / longer / louder" needs), then prints held-out accuracy against chance. A task the
linear map reads well only needs the LM to route one pooled vector to the answer; a task it cannot read needs a
learned circuit in the LM first, which is what a short GRPO run on a random LM does not get.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from warmup import load_rows  # noqa: E402


def tower_features(model_dir: str, rows: list[dict[str, Any]], batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(pooled, halves) per row: mean of the valid tower tokens, and [first-half mean, second-half mean]."""
    import torch
    from tqdm import tqdm
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from r1aqa_plugin.models.qwen2_audio.whisper_init import audio_tower_of

    proc = AutoProcessor.from_pretrained(model_dir)
    tower = audio_tower_of(Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)).eval()
    pooled, halves = [], []
    for i in tqdm(range(0, len(rows), batch), desc="audio tower", unit="batch"):
        chunk = rows[i:i + batch]
        feats = proc.feature_extractor([r["audio"] for r in chunk], sampling_rate=16000, return_attention_mask=True,
                                       padding="max_length", return_tensors="pt")
        with torch.no_grad():
            out = tower(feats["input_features"]).last_hidden_state
        _, lengths = tower._get_feat_extract_output_lengths(feats["attention_mask"].sum(-1))
        for j, n in enumerate(lengths.clamp(min=2).tolist()):
            tokens = out[j, :n]
            pooled.append(tokens.mean(0).numpy())
            halves.append(torch.cat([tokens[: n // 2].mean(0), tokens[n // 2:].mean(0)]).numpy())
    return np.stack(pooled), np.stack(halves)


ORDER_KEYS = {"pitch_order": "freqs_hz", "duration_order": "durations_s", "loudness_order": "amplitudes"}


def audio_label(task: str, answer: str, meta: dict[str, Any]) -> str:
    """What the clip alone decides: for the order tasks, whether the SECOND tone is the higher / longer / louder
    one (their questions ask "higher" or "lower" at random, so the answer also depends on the wording)."""
    if task in ORDER_KEYS:
        first, second = meta[ORDER_KEYS[task]][:2]
        return "second" if second > first else "first"
    return answer


def held_out_accuracy(x: np.ndarray, y: np.ndarray, test_frac: float, seed: int = 0, steps: int = 500) -> float:
    """Multinomial logistic regression (standardised inputs, L2) fit on a split, accuracy on the rest."""
    import torch

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = int(len(y) * (1 - test_frac))
    tr, te = order[:cut], order[cut:]
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y)
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt[tr]), yt[tr]) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(xt[te]).argmax(-1) == yt[te]).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="Qwen2-Audio checkpoint whose audio tower is probed")
    ap.add_argument("--data", required=True, help="synthetic-aqa parquet (a few hundred rows per task)")
    ap.add_argument("--test-frac", type=float, default=0.25)
    a = ap.parse_args(argv)
    import pandas as pd

    rows = load_rows(a.data)
    infos = list(pd.read_parquet(a.data)["extra_info"])
    tasks = [rec["sub_category"] for rec in infos]
    labels_of = [audio_label(rec["sub_category"], row["answer"], json.loads(rec["meta"] or "{}"))
                 for rec, row in zip(infos, rows)]
    pooled, halves = tower_features(a.model, rows)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(tasks):
        by_task[task].append(i)
    print(f"\nLinear read-out of the frozen audio tower ({a.model}), held-out {a.test_frac:.0%} of each task\n")
    print("| task | rows | classes | majority | pooled clip | first half + second half |")
    print("|---|---:|---:|---:|---:|---:|")
    for task, idx in sorted(by_task.items()):
        labels = sorted({labels_of[i] for i in idx})
        y = np.array([labels.index(labels_of[i]) for i in idx])
        chance = np.bincount(y).max() / len(y)
        acc_p = held_out_accuracy(pooled[idx], y, a.test_frac)
        acc_h = held_out_accuracy(halves[idx], y, a.test_frac)
        print(f"| {task} | {len(idx)} | {len(labels)} | {chance:.2f} | {acc_p:.2f} | {acc_h:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
