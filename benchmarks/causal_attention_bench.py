"""Hook AA (or AB) side by side: verl's padded actor micro-batch with sdpa's masked kernel and with its causal one
(``--hook shared``: as separate rows and with each group's shared prompt packed once).

    python benchmarks/causal_attention_bench.py [--hook causal|shared] [--size 7b] [--micro 16] [--tokens 256]
        [--clip-seconds 10] [--short 114] [--repeats 4] [--dtype bf16] [--json out.json]

The model is ``encoder_dedup_bench.py``'s (random weights, sdpa, gradient checkpointing, the encoder trained, hook
I on with one clip per 8 rows). The micro-batch goes through verl 0.9.1's own padded path
(``FSDPEngineWithLMHead.prepare_model_inputs`` and ``prepare_model_outputs``, hooks M and AA in place) as nested
rows of unequal length, like the 7B step's: row i is ``i % 6`` tokens shorter (its prompts were 318-323 tokens) and
row 0 another ``--short`` tokens shorter (an early end of sequence); each clip's 8 rows share their prompt, in verl's
interleaved order. Each pass runs with ``R1AQA_CAUSAL_ATTENTION`` (hook AA; hook AB off) or, with ``--hook shared``,
``R1AQA_SHARED_PROMPT`` (hook AB; hook AA on) = 0 and 1 in turns (A B A B ..., so drift hits both):
- ``log-prob``: no-grad forward and verl's token log-probs (the reference pass);
- ``update``: the same with gradients, and backward (the actor's update; the recompute included).
The table gives the medians, the largest difference of a real token's log-prob between the two, and (on CUDA) the
time of each attention kernel family in one profiled update per setting. sdpa's cuDNN kernels are off by default,
as in verl's workers: importing vLLM's CUDA platform turns them off process-wide
(``torch.backends.cuda.enable_cudnn_sdp(False)`` in ``vllm/platforms/cuda.py``), so there the masked path runs the
memory-efficient kernel and the causal path the flash kernel. ``--cudnn-sdp on`` leaves torch's choice (on the H200,
2026-12-01: cuDNN for both). Toy run on CPU: ``--size tiny --tokens 8
--clip-seconds 2 --micro 4 --short 3 --repeats 1 --dtype fp32``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from encoder_dedup_bench import add_micro_batch_arguments, batch, built  # noqa: E402  (hook I's bench's model)

from r1aqa_plugin.models.qwen2_audio.causal_attention import CAUSAL_ENV  # noqa: E402
from r1aqa_plugin.models.qwen2_audio.shared_prompt import SHARED_ENV  # noqa: E402

# the switch each --hook turns, and the other hook's fixed setting
HOOKS = {"causal": (CAUSAL_ENV, {SHARED_ENV: "0"}), "shared": (SHARED_ENV, {CAUSAL_ENV: "1"})}

# sdpa's kernels by family, as the CUDA profiler names them (torch 2.11 on the H200)
KERNEL_FAMILIES = {"masked (memory-efficient)": ("fmha_cutlass", "efficient_attention"),
                   "causal (flash)": ("flash_fwd", "flash_bwd"), "cuDNN sdpa": ("_sdpa_", "sdpa_sm")}


def verl_micro_batch(rows: list[Any], multi_modal: list[dict[str, Any]], pad_token_id: int) -> Any:
    """verl's micro-batch for its padded path: nested ``rows`` of token ids at positions 0..L-1, one dict of audio
    inputs per row."""
    import torch
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.dataset_utils import DatasetPadMode

    positions = [torch.arange(r.numel(), device=r.device) for r in rows]
    return tu.get_tensordict(
        {"input_ids": torch.nested.as_nested_tensor(rows, layout=torch.jagged),
         "position_ids": torch.nested.as_nested_tensor(positions, layout=torch.jagged),
         "temperature": torch.ones(len(rows), device=rows[0].device), "multi_modal_inputs": multi_modal},
        {"use_remove_padding": False, "pad_mode": DatasetPadMode.NO_PADDING, "use_fused_kernels": False,
         "pad_token_id": pad_token_id})


def verl_engine(model: Any) -> Any:
    """verl's FSDP engine class for a language model, holding only what its input and output preparation read."""
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    engine = FSDPEngineWithLMHead.__new__(FSDPEngineWithLMHead)
    engine.pad_to_length = False
    engine.model_config = types.SimpleNamespace(hf_config=model.config)
    return engine


def log_probs(model: Any, engine: Any, micro_batch: Any) -> Any:
    """Every real token's log-prob, through verl's input and output preparation, as its ``forward_step`` runs it."""
    inputs, output_args = engine.prepare_model_inputs(micro_batch)
    output = model(**inputs, use_cache=False)
    return engine.prepare_model_outputs(output, output_args, micro_batch, None)["log_probs"].values()


def ragged_rows(inp: dict[str, Any], short: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """``batch()``'s equal rows cut to the 7B step's unequal lengths, with each row's audio inputs."""
    n, length = inp["input_ids"].shape
    cuts = [i % 6 + (short if i == 0 else 0) for i in range(n)]
    rows = [inp["input_ids"][i, :length - cut] for i, cut in enumerate(cuts)]
    audio = [{"input_features": inp["input_features"][i:i + 1],
              "feature_attention_mask": inp["feature_attention_mask"][i:i + 1]} for i in range(n)]
    return rows, audio


def kernel_seconds(fn: Any) -> dict[str, float]:
    """Seconds of GPU time per attention kernel family while ``fn`` runs once (CUDA only)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    totals = dict.fromkeys(KERNEL_FAMILIES, 0.0)
    for event in prof.key_averages():
        for family, marks in KERNEL_FAMILIES.items():
            if any(m in event.key for m in marks):
                totals[family] += event.device_time_total / 1e6
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hook", choices=tuple(HOOKS), default="causal",
                    help="causal: hook AA off/on (AB off); shared: hook AB off/on (AA on)")
    ap.add_argument("--micro", default="16", help="sequences per micro-batch, comma-separated")
    ap.add_argument("--short", type=int, default=114, help="tokens row 0 ends early by, besides the i %% 6 of all")
    ap.add_argument("--cudnn-sdp", choices=("off", "on"), default="off",
                    help="sdpa's cuDNN kernels (off: as in verl's workers, where vLLM's import turns them off)")
    add_micro_batch_arguments(ap, repeats=4)
    a = ap.parse_args(argv)

    import torch

    torch.backends.cuda.enable_cudnn_sdp(a.cudnn_sdp == "on")
    switch, fixed = HOOKS[a.hook]
    os.environ.update(fixed)

    from r1aqa_plugin.models.qwen2_audio.builder import build_processor

    model, device, sync = built(a)
    model.train()
    engine = verl_engine(model)
    pad_token_id = build_processor().tokenizer.pad_token_id

    rows_out = []
    for micro in [int(x) for x in a.micro.split(",")]:
        micro_batch = verl_micro_batch(*ragged_rows(batch(micro, max(1, micro // 8), a.tokens, a.clip_seconds,
                                                          device), a.short), pad_token_id)

        def log_prob_pass() -> Any:
            with torch.no_grad():
                return log_probs(model, engine, micro_batch)

        def update_pass() -> None:
            model.zero_grad(set_to_none=True)
            log_probs(model, engine, micro_batch).float().mean().backward()

        def timed(fn: Any) -> float:
            sync()
            t = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - t

        times: dict[str, list[float]] = {f"{p}_{s}": [] for p in ("logprob", "update") for s in "01"}
        values = {}
        for setting in "01":  # one warm-up each, and the values compared
            os.environ[switch] = setting
            values[setting] = log_prob_pass().float()
            update_pass()
        for _ in range(a.repeats):
            for setting in "01":
                os.environ[switch] = setting
                times[f"logprob_{setting}"].append(timed(log_prob_pass))
                times[f"update_{setting}"].append(timed(update_pass))
        rec: dict[str, Any] = {"micro": micro, "lengths": [int(n) for n in micro_batch["input_ids"].offsets().diff()],
                               **{f"s_{k}": statistics.median(v) for k, v in times.items()}, "runs": times,
                               "max_abs_logprob_diff": (values["1"] - values["0"]).abs().max().item()}
        if device == "cuda":
            for setting in "01":
                os.environ[switch] = setting
                rec[f"kernels_{setting}"] = kernel_seconds(update_pass)
        rows_out.append(rec)
        print(f"  micro {micro}: update {rec['s_update_0']:.3f} -> {rec['s_update_1']:.3f} s, log-prob "
              f"{rec['s_logprob_0']:.3f} -> {rec['s_logprob_1']:.3f} s", flush=True)
    for name in (switch, *fixed):
        os.environ.pop(name, None)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None

    what = {"causal": "Causal attention (hook AA), masked -> causal",
            "shared": "Shared prompts (hook AB), separate rows -> packed"}[a.hook]
    print(f"\n{what}; {a.size}, one micro-batch through verl's padded path, {device}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, sdpa's cuDNN kernels {a.cudnn_sdp}\n")
    print("| micro-batch | row lengths | log-prob s | update s | update saved s | max abs log-prob diff |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows_out:
        span = f"{min(r['lengths'])}-{max(r['lengths'])}"
        print(f"| {r['micro']} | {span} | {r['s_logprob_0']:.3f} -> {r['s_logprob_1']:.3f} | "
              f"{r['s_update_0']:.3f} -> {r['s_update_1']:.3f} | {r['s_update_0'] - r['s_update_1']:+.3f} | "
              f"{r['max_abs_logprob_diff']:.2e} |")
    if device == "cuda":
        print(f"\n| micro-batch | attention kernels in one update, hook {a.hook} off | on |")
        print("|---:|---|---|")
        for r in rows_out:
            cells = [", ".join(f"{k} {v:.3f} s" for k, v in r[f"kernels_{s}"].items() if v) for s in "01"]
            print(f"| {r['micro']} | {cells[0]} | {cells[1]} |")
        print(f"(peak GPU memory {peak:.1f} GB)")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows_out, "peak_gb": peak}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
