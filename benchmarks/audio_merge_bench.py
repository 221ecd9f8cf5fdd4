"""Hook Y side by side: one actor micro-batch's forward + backward with transformers' audio merge and with hook Y's.

    python benchmarks/audio_merge_bench.py [--size 7b] [--micro 8,16] [--tokens 256] [--clip-seconds 10]
        [--repeats 4] [--dtype bf16] [--json out.json]

The model, micro-batch and update pass are ``encoder_dedup_bench.py``'s (random weights, sdpa, gradient
checkpointing, the encoder trained, hook I on with one clip per 8 rows as verl's grouped batches have it). For each
``--micro`` the update runs with ``R1AQA_SYNC_FREE_MERGE`` = 0 and 1 in turns (A B A B ..., so drift hits both), and
the table gives the medians and the host's time blocked in the backward's ``nonzero()`` (``torch.cuda``'s sync
debug mode counts the syncing calls). This is the model without FSDP, so its host runs lighter than verl's actor:
the gain inside verl's update is bounded by, not equal to, the wait measured here. Toy run on CPU: ``--size tiny
--tokens 8 --clip-seconds 2 --micro 8 --repeats 1 --dtype fp32``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from encoder_dedup_bench import add_micro_batch_arguments, batch, built  # noqa: E402  (hook I's bench's model)

from r1aqa_plugin.models.qwen2_audio.audio_merge import MERGE_ENV  # noqa: E402


def syncs_in_backward(loss: Any) -> int:
    """Synchronizing CUDA calls the backward of ``loss`` makes (torch's sync debug mode, "warn")."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--micro", default="8,16", help="sequences per micro-batch, comma-separated")
    add_micro_batch_arguments(ap, repeats=4)
    a = ap.parse_args(argv)

    import torch

    model, device, sync = built(a)
    model.train()

    def loss_of(inp: dict[str, Any]) -> Any:
        model.zero_grad(set_to_none=True)
        logits = model(**inp).logits[:, -a.tokens - 1:-1].float()
        return logits.log_softmax(-1).gather(-1, inp["input_ids"][:, -a.tokens:, None]).mean()

    def update(inp: dict[str, Any]) -> float:
        sync()
        t = time.perf_counter()
        loss_of(inp).backward()
        sync()
        return time.perf_counter() - t

    rows = []
    for micro in [int(x) for x in a.micro.split(",")]:
        inp = batch(micro, max(1, micro // 8), a.tokens, a.clip_seconds, device)
        times: dict[str, list[float]] = {"0": [], "1": []}
        for merge in ("0", "1"):  # one warm-up each
            os.environ[MERGE_ENV] = merge
            update(inp)
        for _ in range(a.repeats):
            for merge in ("0", "1"):
                os.environ[MERGE_ENV] = merge
                times[merge].append(update(inp))
        rec: dict[str, Any] = {"micro": micro, "seq_len": inp["input_ids"].shape[1],
                               "s_0": statistics.median(times["0"]), "s_1": statistics.median(times["1"]),
                               "runs_0": times["0"], "runs_1": times["1"]}
        if device == "cuda":
            for merge in ("0", "1"):
                os.environ[MERGE_ENV] = merge
                rec[f"syncs_{merge}"] = syncs_in_backward(loss_of(inp))
        rec["saved_s"] = rec["s_0"] - rec["s_1"]
        rows.append(rec)
        print(f"  micro {micro}: transformers' merge {rec['s_0']:.3f} s, hook Y {rec['s_1']:.3f} s", flush=True)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None

    print(f"\nAudio merge (hook Y), {a.size}, forward + backward of one micro-batch ({rows[0]['seq_len']} tokens a "
          f"row), {device}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| micro-batch | transformers' merge s | hook Y s | saved s | syncs in backward (off -> on) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        syncs = f"{r['syncs_0']} -> {r['syncs_1']}" if "syncs_0" in r else "-"
        print(f"| {r['micro']} | {r['s_0']:.3f} | {r['s_1']:.3f} | {r['saved_s']:+.3f} | {syncs} |")
    if peak is not None:
        print(f"(peak GPU memory {peak:.1f} GB)")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows, "peak_gb": peak}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
