"""Hook I side by side: one actor micro-batch at R1-AQA's lengths with the audio encoder deduplicated or not.

    python benchmarks/encoder_dedup_bench.py [--size 7b] [--micro 8] [--distinct 1,2,4,8] [--tokens 256]
        [--clip-seconds 10] [--repeats 3] [--dtype bf16] [--json out.json]

Builds the Qwen2-Audio architecture of ``--size`` with random weights (bf16 unless ``--dtype fp32``) where it runs
(sdpa, as verl on the lent H200), a micro-batch of ``--micro`` sequences (R1-AQA's prompt around a
``--clip-seconds`` clip + ``--tokens`` response tokens) holding ``--distinct`` different clips, and times, with
``R1AQA_ENCODER_DEDUP`` off and on:
- ``log-prob``: a no-grad forward + log-softmax gather (verl's old-log-prob and reference passes);
- ``update``: forward + backward with gradient checkpointing (verl's actor update; the encoder is trained, as in
  R1-AQA).
Median of ``--repeats`` after one warm-up; "encoded" is the rows the encoder really ran. In a GRPO step with
``trainer.balance_batch`` on, a micro-batch of 8 holds ~2 (equal lengths) to ~6.5 (random order) distinct clips;
with it off, 1 (the n=8 samples of a prompt are adjacent). Toy run on CPU: ``--size tiny --tokens 8
--clip-seconds 2 --micro 4 --distinct 1,4 --dtype fp32`` (fp32: a CPU without native bf16, AVX2 only, multiplies
bf16 matrices ~100x slower than fp32 in torch 2.13; seen on a 2-core AMD EPYC, 2026-11-30).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rollout_bench import clip, prompt_text  # noqa: E402  (same prompt and clips as the rollout bench)

SR = 16000
DTYPES = {"bf16": "bfloat16", "fp32": "float32"}  # torch's names, resolved in build()


def build(size: str, device: str, dtype: str = "bf16") -> Any:
    """Random-weight Qwen2-Audio of ``size`` in ``dtype`` on ``device`` (hook I installed)."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    import r1aqa_plugin.models.qwen2_audio.verl_hooks  # noqa: F401  installs hook I
    from r1aqa_plugin.models.qwen2_audio.builder import build_config

    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(build_config(size), attn_implementation="sdpa",
                                                                dtype=getattr(torch, DTYPES[dtype]))
    model.gradient_checkpointing_enable()
    return model


def batch(micro: int, distinct: int, tokens: int, seconds: float, device: str) -> dict[str, Any]:
    """A micro-batch of ``micro`` sequences over ``distinct`` clips, in verl's interleaved-after-balance order."""
    import torch

    from r1aqa_plugin.models.qwen2_audio.builder import build_processor

    proc = build_processor()
    text = prompt_text(proc)
    waves = [clip(seconds, s) for s in range(distinct)]
    inp = proc(text=[text] * micro, audio=[waves[i % distinct] for i in range(micro)], sampling_rate=SR,
               return_tensors="pt", padding=True)
    gen = torch.Generator().manual_seed(1)
    response = torch.randint(0, 150_000, (micro, tokens), generator=gen)
    inp["input_ids"] = torch.cat([inp["input_ids"], response], 1)
    inp["attention_mask"] = torch.cat([inp["attention_mask"], torch.ones_like(response)], 1)
    return {k: v.to(device) for k, v in inp.items()}


def add_micro_batch_arguments(ap: argparse.ArgumentParser, repeats: int) -> None:
    """The model and micro-batch options this bench shares with audio_merge_bench.py."""
    ap.add_argument("--size", default="7b")
    ap.add_argument("--tokens", type=int, default=256, help="response tokens per sequence")
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=repeats, help="timed runs per setting, after one warm-up")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="weights and activations")
    ap.add_argument("--json")


def built(a: argparse.Namespace) -> tuple[Any, str, Any]:
    """(the model of ``a.size`` built where this runs, the device, a sync function), with the build time printed."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    model = build(a.size, device, a.dtype)
    print(f"model {a.size} on {device}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params, "
          f"{time.perf_counter() - t0:.0f} s to build", flush=True)
    return model, device, sync


def timed(fn: Any, repeats: int, sync: Any) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--micro", type=int, default=8, help="sequences per micro-batch")
    ap.add_argument("--distinct", default="1,2,4,8", help="distinct clips per micro-batch, comma-separated")
    add_micro_batch_arguments(ap, repeats=3)
    a = ap.parse_args(argv)

    import torch

    from r1aqa_plugin.models.qwen2_audio import encoder_dedup

    model, device, sync = built(a)

    def logprob(inp: dict[str, Any]) -> None:
        model.eval()
        with torch.no_grad():
            logits = model(**inp).logits[:, -a.tokens - 1:-1].float()
            logits.log_softmax(-1).gather(-1, inp["input_ids"][:, -a.tokens:, None]).sum().item()

    def update(inp: dict[str, Any]) -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        logits = model(**inp).logits[:, -a.tokens - 1:-1].float()
        logits.log_softmax(-1).gather(-1, inp["input_ids"][:, -a.tokens:, None]).mean().backward()

    rows = []
    for distinct in [int(x) for x in a.distinct.split(",")]:
        inp = batch(a.micro, distinct, a.tokens, a.clip_seconds, device)
        for name, fn in (("log-prob", logprob), ("update", update)):
            rec: dict[str, Any] = {"pass": name, "distinct": distinct, "seq_len": inp["input_ids"].shape[1]}
            for dedup in ("0", "1"):
                os.environ[encoder_dedup.DEDUP_ENV] = dedup
                before = encoder_dedup.stats()
                rec[f"s_{dedup}"] = timed(lambda: fn(inp), a.repeats, sync)
                after = encoder_dedup.stats()
                rec[f"encoded_{dedup}"] = (after["encoded"] - before["encoded"]) // (a.repeats + 1)
            rec["saved"] = 1 - rec["s_1"] / rec["s_0"]
            rows.append(rec)
            print(f"  {name:<8} {distinct} distinct: off {rec['s_0']:.3f} s, on {rec['s_1']:.3f} s", flush=True)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None

    print(f"\nAudio encoder dedup (hook I), {a.size}, micro-batch {a.micro} x {rows[0]['seq_len']} tokens, "
          f"{device}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| pass | distinct clips | encoded off -> on | dedup off s | dedup on s | time saved |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['pass']} | {r['distinct']} | {r['encoded_0']} -> {r['encoded_1']} | {r['s_0']:.3f} | "
              f"{r['s_1']:.3f} | {100 * r['saved']:.0f}% |")
    if peak is not None:
        print(f"(peak GPU memory {peak:.1f} GB)")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows, "peak_gb": peak}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
