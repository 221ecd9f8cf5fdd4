"""Hook P side by side: what one step's actor audio features cost to carry, as full 30 s windows or cut.

    python benchmarks/feature_transfer_bench.py [--mels 80,128] [--seconds 4,10] [--samples 512] [--micro 128]
        [--repeats 3] [--json out.json]

For each mel-bin count (80: the learning proof's Whisper tiny.en tower; 128: Qwen2-Audio-7B) and clip length,
builds ``--samples`` per-sample feature dicts as the plugin's processor returns them to verl's agent loop (one
``(1, mels, frames)`` row and its frame mask each), with ``R1AQA_TRIM_FEATURES`` off (3,000 frames) and on (the
clip's frames + 2), and times the hops they take to the actor, each with verl's or torch's own code:
- ``pickle``: a pickle round trip of the step's dicts (protocol 5; a stand-in for Ray's and TransferQueue's
  serialisation, which this does not run);
- ``batch``: verl's ``extract_multi_modal_inputs`` over each micro-batch of ``--micro`` rows (its zero-padding
  concatenation, which the reference pass and the update both run);
- ``to GPU``: copying each micro-batch to the GPU and hook P's padding back to 3,000 frames (CUDA only).
Median of ``--repeats``. The seconds are per step: every hop runs once per pass that reads the features (the
reference pass and the update: twice a step in the learning proof's recipe).

``--check-model SIZE`` (default ``small``; ``none`` skips it) also runs a random-weight Qwen2-Audio of that size
(bf16 on a GPU, fp32 on the CPU, sdpa) on four clips of unequal length, once with full windows and once with the cut
features batched by verl, and reports whether the logits are equal bit for bit on this device. Toy run on CPU:
``--mels 80 --seconds 4 --samples 32 --micro 16 --repeats 1 --check-model tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # rollout_bench's prompt and clips

SR = 16000
WINDOW = 3000


def step_rows(mels: int, seconds: float, samples: int, cut: bool) -> list[dict[str, Any]]:
    """``samples`` per-sample feature dicts of one clip length (random values; only the shapes matter here)."""
    import torch

    from r1aqa_plugin.models.qwen2_audio.feature_window import trim

    valid = int(np.ceil(seconds * SR / 160))
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((1, mels, WINDOW), dtype=np.float32)
    mask = np.zeros((1, WINDOW), np.int32)
    mask[:, :valid] = 1
    if cut:
        feats, mask = trim(feats, mask)
    return [{"input_features": torch.from_numpy(feats.copy()), "feature_attention_mask": torch.from_numpy(mask)}
            for _ in range(samples)]


def _median_s(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(rows: list[dict[str, Any]], micro: int, repeats: int, device: str | None) -> dict[str, float]:
    """Seconds per step for each hop, and MB per sample."""
    import torch
    from verl.utils.model import extract_multi_modal_inputs

    from r1aqa_plugin.models.qwen2_audio.feature_window import pad_to_window

    chunks = [rows[i:i + micro] for i in range(0, len(rows), micro)]
    out = {"mb_per_sample": sum(t.numel() * t.element_size() for t in rows[0].values()) / 1e6}
    out["pickle_s"] = _median_s(lambda: pickle.loads(pickle.dumps(rows, protocol=5)), repeats)
    out["batch_s"] = _median_s(lambda: [extract_multi_modal_inputs(c) for c in chunks], repeats)
    if device is not None:
        batches = [extract_multi_modal_inputs(c) for c in chunks]

        def copy() -> None:
            for b in batches:
                pad_to_window(b["input_features"].to(device), b["feature_attention_mask"].to(device), WINDOW)
            torch.cuda.synchronize()

        copy()
        out["to_gpu_s"] = _median_s(copy, repeats)
    return out


def model_check(size: str, device: str) -> dict[str, Any]:
    """Logits of four clips of unequal length with full windows vs cut features (hook P), on ``device``."""
    import torch
    from rollout_bench import clip, prompt_text
    from transformers import Qwen2AudioForConditionalGeneration
    from verl.utils.model import extract_multi_modal_inputs

    import r1aqa_plugin.models.qwen2_audio.verl_hooks  # noqa: F401  installs hook P
    from r1aqa_plugin.models.qwen2_audio.builder import build_config, build_processor
    from r1aqa_plugin.models.qwen2_audio.feature_window import trim

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = build_config(size)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=dtype)
    model.eval()
    proc = build_processor(config.audio_config.num_mel_bins)
    waves = [clip(seconds, seed) for seed, seconds in enumerate((2.006, 4.0, 3.0, 10.0))]
    full = proc(text=[prompt_text(proc)] * len(waves), audio=waves, sampling_rate=SR, return_tensors="pt",
                padding=True)
    rows = []  # each clip's own row of the full batch, cut as the processor's features-only call cuts it
    for i in range(len(waves)):
        cut, cut_mask = trim(full["input_features"][i:i + 1].numpy(), full["feature_attention_mask"][i:i + 1].numpy())
        rows.append({"input_features": torch.from_numpy(cut), "feature_attention_mask": torch.from_numpy(cut_mask)})
    full = {k: v.to(device) for k, v in full.items()}
    cut = {k: v.to(device) for k, v in extract_multi_modal_inputs(rows).items()}
    with torch.no_grad():
        a = model(**full).logits.float()
        b = model(**{**full, **cut}).logits.float()
    return {"size": size, "device": device, "dtype": str(dtype).removeprefix("torch."),
            "cut_frames": int(cut["input_features"].shape[-1]), "equal": bool(torch.equal(a, b)),
            "max_abs_diff": float((a - b).abs().max())}


def main(argv: list[str] | None = None) -> int:
    """Print the side-by-side table (and write it as JSON with ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mels", default="80,128")
    ap.add_argument("--seconds", default="4,10")
    ap.add_argument("--samples", type=int, default=512, help="samples a step (learning proof 512, R1-AQA 128)")
    ap.add_argument("--micro", type=int, default=128, help="rows per micro-batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-model", default="small", help="model size for the exactness check, or none")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    import torch

    device = "cuda" if torch.cuda.is_available() else None
    results = []
    for mels in (int(m) for m in args.mels.split(",")):
        for seconds in (float(s) for s in args.seconds.split(",")):
            row: dict[str, Any] = {"mels": mels, "seconds": seconds}
            for cut in (False, True):
                m = measure(step_rows(mels, seconds, args.samples, cut), args.micro, args.repeats, device)
                row.update({f"{k}_{'cut' if cut else 'full'}": v for k, v in m.items()})
            results.append(row)
            print(f"  {mels} mels, {seconds:g} s: done", flush=True)

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    print(f"\nActor audio features per step, full 30 s windows vs cut (hook P): {args.samples} samples, micro-batches "
          f"of {args.micro}, {device or 'cpu, no GPU copy'}, {os.cpu_count()} CPUs, {when} UTC\n")
    hops = [("pickle", "pickle_s"), ("batch", "batch_s")] + ([("to GPU + pad", "to_gpu_s")] if device else [])
    head = "| mels | clip s | MB/sample full -> cut |" + "".join(f" {h} full s | {h} cut s | {h} x |" for h, _ in hops)
    print(head)
    print("|" + "---:|" * (3 + 3 * len(hops)))
    for r in results:
        cells = [f"{r['mels']}", f"{r['seconds']:g}", f"{r['mb_per_sample_full']:.2f} -> {r['mb_per_sample_cut']:.2f}"]
        for _, key in hops:
            full, cut = r[f"{key}_full"], r[f"{key}_cut"]
            cells += [f"{full:.3f}", f"{cut:.3f}", f"{full / cut:.1f}" if cut > 0 else "-"]
        print("| " + " | ".join(cells) + " |")
    check = None
    if args.check_model != "none":
        check = model_check(args.check_model, device or "cpu")
        print(f"\nModel check ({check['size']}, {check['device']}, {check['dtype']}, sdpa; clips of 2.006, 4, 3 and 10 s, "
              f"cut to {check['cut_frames']} frames): logits equal bit for bit: {check['equal']} "
              f"(max |diff| {check['max_abs_diff']:.3g})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"when": when, "device": device, "args": vars(args), "results": results, "model_check": check},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
