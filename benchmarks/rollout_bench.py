"""One R1-AQA-shaped rollout batch, measured side by side: bare vLLM, the plugin's request path, HF generate.

    python benchmarks/rollout_bench.py [--modes vllm,plugin,hf-r1aqa,hf-batched,vllm-kvfp8] [--size 7b] [--batch 16]
        [--n 8]
        [--tokens 256] [--clip-seconds 10] [--hf-prompts K] [--eager] [--gpu-mem 0.85] [--grpo-log LOG]
        [--workdir /tmp/r1aqa-rollout] [--json rollout.json]

Same model (Qwen2-Audio architecture of ``--size``, random weights), same prompts (the R1-AQA question around one
``--clip-seconds`` noise clip per prompt, ``--batch`` prompts x ``--n`` samples) and fixed output lengths
(``ignore_eos`` in vLLM, ``min_new_tokens`` in HF) in every mode. Each mode runs in its own child process of this
script, one after the other (a vLLM engine does not give its GPU memory back inside a process); the parent prints
one table and writes JSON, with each child's whole output beside it (``JSON-stem-MODE.log``).

Modes:
- ``vllm``: bare vLLM, offline ``LLM.generate``, ``load_format='dummy'``; one ``TokensPrompt`` per prompt (one
  ``<|AUDIO|>``, vLLM expands it) with ``SamplingParams(n=N)`` (``--vllm-fanout requests`` sends B x N requests).
- ``plugin``: the same engine driven as verl 0.9.1's ``vLLMHttpServer.generate`` drives it
  (verl/workers/rollout/vllm_rollout/vllm_async_server.py:634-666): ``AsyncLLM``, B x N concurrent requests of
  n=1, each ``TokensPrompt(prompt_token_ids=collapse_audio_runs(HF-expanded ids), multi_modal_data={'audio':
  [wave]}, mm_processor_kwargs={'sampling_rate': 16000})``. Inside the timed region each request first runs the
  processor on its sample (as verl's agent loop does per sample, in ``--prep-workers`` threads); after the batch,
  the post-rollout feature call verl repeats per sample (agent_loop.py:868-918) is timed separately
  (``post_features_s``; verl overlaps it across its agent-loop worker processes). Two timed batches on one engine,
  side by side: ``plugin`` with the processor verl's workers get once the adapter is installed (``verl.utils.
  hf_processor``: the plugin's, features once per distinct clip) and ``plugin, stock processor`` with
  transformers' ``Qwen2AudioProcessor`` (features per sample; the only plugin row up to 2026-11-29).
- ``vllm-kvfp8``: ``vllm`` with ``kv_cache_dtype='fp8'``: Qwen2-Audio-7B has no grouped-query attention, so the
  KV cache, not the weights, is most of what decode reads (``floor.py``); fp8 halves it. Not R1-AQA's numerics (its
  rollouts were bf16): the floor column stays the bf16 one. In verl:
  ``+actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_dtype=fp8``. Measured on one H200 (2026-12-01): 3.87 s
  against bf16's 3.78, no gain, so the decode step is not bound by reading the KV cache at this shape.
- ``hf-r1aqa``: transformers ``generate`` as R1-AQA calls it: one prompt per call, ``num_return_sequences=N``,
  B calls (``--hf-prompts K`` times K calls and extrapolates to B: marked ``extrapolated``).
- ``hf-batched``: all B prompts in one ``generate`` call.
- ``--grpo-log LOG`` adds a row from a ``main_ppo`` console log: mean ``timing_s/gen`` after step 1 (verl's real
  agent loop + vLLM server + audio). AgentLoopManager cannot be stood up without the trainer in verl 0.9.1
  (it needs the trainer's LLM client, rollout replicas and, in the v1 trainer, TransferQueue).

The floor column is ``benchmarks/floor.py``'s rollout floor for the same shape (decode HBM traffic + prefill).
Toy run on CPU: ``--size tiny --batch 2 --n 2 --tokens 8 --clip-seconds 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

for _k, _v in dict(VLLM_USE_FLASHINFER_SAMPLER="0", VLLM_WORKER_MULTIPROC_METHOD="spawn", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1").items():
    os.environ.setdefault(_k, _v)

SR = 16000
QUESTION = ("Based on the given audio, identify the source of the sound. Please choose the answer from the following "
            "options: ['a dog barking', 'a car engine starting', 'a person playing the piano', 'birds singing']. "
            "Output the final answer in <answer> </answer>.")
MODES = ("vllm", "plugin", "hf-r1aqa", "hf-batched", "vllm-kvfp8")
PAD_ID = 151643


# --------------------------------------------------------------------------------------------- shared inputs
def clip(seconds: float, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def prompt_text(processor: Any) -> str:
    msgs = [{"role": "user", "content": [{"type": "audio", "audio": None}, {"type": "text", "text": QUESTION}]}]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def hf_expanded_ids(processor: Any, text: str, wave: Any) -> list[int]:
    return [int(x) for x in processor(text=[text], audio=[wave], sampling_rate=SR)["input_ids"][0]]


def model_dir(a: argparse.Namespace) -> Path:
    from r1aqa_plugin.models.qwen2_audio.builder import build_checkpoint

    out = Path(a.workdir) / f"qwen2audio-{a.size}-noweights"
    if not (out / "config.json").exists():
        build_checkpoint(out, size=a.size, weights="none")
    return out


def result(rec: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(rec), flush=True)


# ------------------------------------------------------------------------------------------------ vLLM modes
def _engine_kwargs(a: argparse.Namespace, path: Path, max_len: int, kv_cache_dtype: str = "auto") -> dict[str, Any]:
    import torch

    kw: dict[str, Any] = dict(model=str(path), load_format="dummy", dtype="bfloat16", max_model_len=max_len,
                              limit_mm_per_prompt={"audio": 1}, seed=0, enforce_eager=a.eager,
                              max_num_seqs=max(256, a.batch * a.n), kv_cache_dtype=kv_cache_dtype)
    if torch.cuda.is_available():
        kw["gpu_memory_utilization"] = a.gpu_mem
    return kw


def _seeds(phase: str, a: argparse.Namespace) -> list[int]:
    base = 0 if phase == "warmup" else 10_000  # fresh audio for the timed batch: no cache hits across batches
    return [base + i for i in range(a.batch)]


def run_vllm(a: argparse.Namespace, kv_cache_dtype: str = "auto") -> None:
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from r1aqa_plugin.models.qwen2_audio.verl_hooks import collapse_audio_runs

    path = model_dir(a)
    proc = AutoProcessor.from_pretrained(path)
    text = prompt_text(proc)
    t0 = time.perf_counter()
    probe = hf_expanded_ids(proc, text, clip(a.clip_seconds, 0))
    llm = LLM(**_engine_kwargs(a, path, len(probe) + a.tokens + 16, kv_cache_dtype))
    init_s = time.perf_counter() - t0
    collapsed = collapse_audio_runs(probe)  # same text and clip length for every prompt: same token ids
    fan_requests = a.vllm_fanout == "requests"
    sp = SamplingParams(n=1 if fan_requests else a.n, temperature=1.0, top_p=1.0, max_tokens=a.tokens,
                        ignore_eos=True)
    rec: dict[str, Any] = {}
    for phase in ("warmup", "timed"):
        prompts = [TokensPrompt(prompt_token_ids=collapsed, multi_modal_data={"audio": [clip(a.clip_seconds, s)]},
                                mm_processor_kwargs={"sampling_rate": SR}) for s in _seeds(phase, a)]
        if fan_requests:
            prompts = [p for p in prompts for _ in range(a.n)]
        t = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        dt = time.perf_counter() - t
        ntok = sum(len(c.token_ids) for o in outs for c in o.outputs)
        rec = {"mode": "vllm" if kv_cache_dtype == "auto" else f"vllm, {kv_cache_dtype} KV cache", "seconds": dt,
               "out_tokens": ntok, "seqs": sum(len(o.outputs) for o in outs),
               "prompt_len": len(outs[0].prompt_token_ids), "init_s": init_s, "eager": a.eager,
               "fanout": a.vllm_fanout, "kv_cache_dtype": kv_cache_dtype}
    result(rec)


def run_plugin(a: argparse.Namespace) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from transformers import AutoProcessor
    from verl.utils import hf_processor
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import TokensPrompt
    from vllm.v1.engine.async_llm import AsyncLLM

    from r1aqa_plugin.models.qwen2_audio.verl_hooks import collapse_audio_runs  # importing installs the adapter

    path = model_dir(a)
    procs = {"plugin": hf_processor(str(path)), "plugin, stock processor": AutoProcessor.from_pretrained(path)}
    if type(procs["plugin"]) is type(procs["plugin, stock processor"]):
        raise RuntimeError("verl.utils.hf_processor gave the stock processor: the adapter's hook A is not installed")
    text = prompt_text(procs["plugin"])
    probe = hf_expanded_ids(procs["plugin"], text, clip(a.clip_seconds, 0))
    t0 = time.perf_counter()
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**_engine_kwargs(a, path, len(probe) + a.tokens + 16)))
    init_s = time.perf_counter() - t0
    pool = ThreadPoolExecutor(max_workers=a.prep_workers)

    async def one(proc: Any, req_id: str, wave: Any) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(pool, hf_expanded_ids, proc, text, wave)  # the agent loop's processor call
        prompt = TokensPrompt(prompt_token_ids=collapse_audio_runs(ids), multi_modal_data={"audio": [wave]},
                              mm_processor_kwargs={"sampling_rate": SR})
        sp = SamplingParams(max_tokens=a.tokens, temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0,
                            ignore_eos=True, logprobs=0)  # verl: calculate_log_probs -> logprobs=0
        final = None
        async for out in engine.generate(prompt=prompt, sampling_params=sp, request_id=req_id):
            final = out
        assert final is not None
        return len(final.outputs[0].token_ids), len(final.prompt_token_ids)

    async def batch(phase: str, proc: Any, seeds: list[int]) -> tuple[float, list[tuple[int, int]], list[Any]]:
        waves = [clip(a.clip_seconds, s) for s in seeds]
        t = time.perf_counter()
        res = await asyncio.gather(*[one(proc, f"{phase}-{i}-{j}", w) for i, w in enumerate(waves)
                                     for j in range(a.n)])
        return time.perf_counter() - t, res, waves

    def post_features(mode: str, waves: list[Any]) -> float:
        """verl's post-rollout processor call, once per SAMPLE (B x N): the decoded text has no <|AUDIO|> left."""
        proc = procs[mode]
        t = time.perf_counter()
        for w in waves:
            for _ in range(a.n):
                if mode == "plugin":
                    proc(text=["answer"], audio=[w], sampling_rate=SR)
                else:  # the stock processor refuses that call; its feature extractor is what it would run
                    proc.feature_extractor([w], sampling_rate=SR, return_attention_mask=True, padding="max_length")
        return time.perf_counter() - t

    # fresh clips per batch, so no feature-cache or vLLM prefix/encoder-cache hits across batches; the plugin row
    # gets the timed clips of every other mode
    timed = _seeds("timed", a)
    seeds = {"plugin": timed, "plugin, stock processor": [s + 10_000 for s in timed]}

    async def main() -> list[dict[str, Any]]:
        await batch("warmup", procs["plugin"], _seeds("warmup", a))
        recs = []
        for k, mode in enumerate(procs):
            dt, res, waves = await batch(f"timed{k}", procs[mode], seeds[mode])
            recs.append({"mode": mode, "seconds": dt, "out_tokens": sum(r[0] for r in res), "seqs": len(res),
                         "prompt_len": res[0][1], "init_s": init_s, "eager": a.eager,
                         "post_features_s": post_features(mode, waves), "prep_workers": a.prep_workers})
        return recs

    try:
        recs = asyncio.run(main())
    finally:
        engine.shutdown()
        pool.shutdown()
    for rec in recs:
        result(rec)


# -------------------------------------------------------------------------------------------------- HF modes
def run_hf(a: argparse.Namespace, mode: str) -> None:
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from r1aqa_plugin.models.qwen2_audio.builder import build_config, build_processor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    proc = build_processor()
    proc.tokenizer.padding_side = "left"
    text = prompt_text(proc)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):  # random init directly where it runs, in bf16 (R1-AQA: bf16, sdpa)
        model = Qwen2AudioForConditionalGeneration._from_config(build_config(a.size), attn_implementation="sdpa",
                                                                dtype=torch.bfloat16)
    model.eval()
    sync()
    init_s = time.perf_counter() - t0

    def gen(seeds: list[int]) -> tuple[float, int, int]:
        inp = proc(text=[text] * len(seeds), audio=[clip(a.clip_seconds, s) for s in seeds], sampling_rate=SR,
                   return_tensors="pt", padding=True).to(device)
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**inp, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=a.tokens,
                                 min_new_tokens=a.tokens, num_return_sequences=a.n, pad_token_id=PAD_ID)
        sync()
        plen = inp["input_ids"].shape[1]
        return time.perf_counter() - t, (out.shape[1] - plen) * out.shape[0], plen

    gen([90_000])  # warm-up: one prompt
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if mode == "hf-r1aqa":
        k = min(a.hf_prompts or a.batch, a.batch)
        times, ntok, plen = [], 0, 0
        for s in _seeds("timed", a)[:k]:
            dt, nt, plen = gen([s])
            times.append(dt)
            ntok += nt
        seconds = sum(times) * a.batch / k
        rec = {"mode": mode, "seconds": seconds, "out_tokens": ntok * a.batch // k, "seqs": a.batch * a.n,
               "prompt_len": plen, "calls_timed": k, "extrapolated": k < a.batch,
               "per_call_s": [round(x, 3) for x in times]}
    else:
        dt, nt, plen = gen(_seeds("timed", a))
        rec = {"mode": mode, "seconds": dt, "out_tokens": nt, "seqs": a.batch * a.n, "prompt_len": plen}
    rec["init_s"] = init_s
    rec["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None
    result(rec)


# --------------------------------------------------------------------------------------------------- parent
def grpo_log_row(path: str, a: argparse.Namespace) -> dict[str, Any] | None:
    from grpo_step_bench import parse_metrics

    steps = [s for s in parse_metrics(Path(path).read_text(errors="replace")) if s.get("step", 0) > 1]
    gens = [s["timing_s/gen"] for s in steps if "timing_s/gen" in s]
    if not gens:
        return None
    sec = sum(gens) / len(gens)
    plen = steps[-1].get("prompt_length/mean", 0)
    rlen = steps[-1].get("response_length/mean", a.tokens)
    return {"mode": "verl agent loop (grpo log)", "seconds": sec, "out_tokens": int(rlen * a.batch * a.n),
            "seqs": a.batch * a.n, "prompt_len": int(round(plen)), "steps": len(gens), "source": path}


def rollout_floor(a: argparse.Namespace, prompt_len: int) -> float:
    import floor

    text_tokens = max(prompt_len - floor.audio_tokens(a.clip_seconds), 0)
    shape = floor.Shape(prompts=a.batch, n=a.n, response=a.tokens, clip_seconds=a.clip_seconds,
                        text_tokens=text_tokens)
    return floor.rollout_floor_seconds(floor.grpo_floor(a.size, shape, a.tflops, a.tbps))


def table(rows: list[dict[str, Any]], a: argparse.Namespace) -> str:
    base = next((r for r in rows if r["mode"] == "vllm"), None)
    r1 = next((r for r in rows if r["mode"] == "hf-r1aqa"), None)
    hdr = (f"| {'mode':<28} | {'s/batch':>8} | {'tok/s':>9} | {'vs bare vLLM':>12} | {'speed-up vs R1-AQA':>18} "
           f"| {'x floor':>7} | notes |")
    out = [hdr, "|" + "|".join("-" * (len(c)) + (":" if i else "") for i, c in
                               enumerate(hdr.split("|")[1:-1])) + "|"]
    for r in rows:
        tps = r["out_tokens"] / r["seconds"]
        vs_base = f"{tps / (base['out_tokens'] / base['seconds']):.3f}" if base else "-"
        vs_r1 = f"{r1['seconds'] / r['seconds']:.1f}x" if r1 else "-"
        notes = []
        if r.get("extrapolated"):
            notes.append(f"extrapolated from {r['calls_timed']} of {a.batch} calls")
        if r.get("post_features_s") is not None:
            notes.append(f"+{r['post_features_s']:.2f} s post-rollout features (x{r['seqs']})")
        if r.get("peak_mem_gb"):
            notes.append(f"peak {r['peak_mem_gb']:.1f} GB")
        if r.get("steps"):
            notes.append(f"mean of {r['steps']} steps")
        if r.get("kv_cache_dtype", "auto") != "auto":
            notes.append(f"KV cache {r['kv_cache_dtype']} (the floor is bf16's)")
        out.append(f"| {r['mode']:<28} | {r['seconds']:8.2f} | {tps:9,.0f} | {vs_base:>12} | {vs_r1:>18} | "
                   f"{r['seconds'] / r['floor_s']:7.2f} | {'; '.join(notes)} |")
    return "\n".join(out)


def goals(rows: list[dict[str, Any]]) -> list[str]:
    by = {r["mode"]: r for r in rows}
    lines = []
    if "vllm" in by and "plugin" in by:
        frac = (by["vllm"]["seconds"] / by["plugin"]["seconds"])
        lines.append(f"goal plugin >= 0.85 x bare vLLM throughput: {frac:.3f} -> {'MET' if frac >= 0.85 else 'NOT MET'}")
    if "hf-r1aqa" in by and "plugin" in by:
        sp = by["hf-r1aqa"]["seconds"] / by["plugin"]["seconds"]
        lines.append(f"goal plugin >= 30x R1-AQA's way: {sp:.1f}x -> {'MET' if sp >= 30 else 'NOT MET'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--size", default="7b")
    ap.add_argument("--batch", type=int, default=16, help="prompts per batch")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--tokens", type=int, default=256, help="new tokens per sample (fixed)")
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--hf-prompts", type=int, default=0, help="hf-r1aqa: time this many calls, extrapolate")
    ap.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs")
    ap.add_argument("--gpu-mem", type=float, default=0.85)
    ap.add_argument("--vllm-fanout", choices=["n", "requests"], default="n")
    ap.add_argument("--prep-workers", type=int, default=8, help="plugin: threads running the per-sample processor")
    ap.add_argument("--grpo-log", help="add verl's timing_s/gen from a main_ppo console log")
    ap.add_argument("--tflops", type=float, default=790.0)
    ap.add_argument("--tbps", type=float, default=4.3)
    ap.add_argument("--workdir", default=os.environ.get("WORK", "/tmp/r1aqa-rollout"))
    ap.add_argument("--json", help="write all rows here")
    ap.add_argument("--timeout", type=int, default=1800, help="per mode, seconds")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    import torch

    if not torch.cuda.is_available():  # vLLM's CPU build (toy runs and tests): as tests/test_vllm_engine.py runs it
        for key, val in dict(VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0",
                             TOKENIZERS_PARALLELISM="false").items():
            os.environ.setdefault(key, val)

    if a.child:
        children = {"vllm": run_vllm, "vllm-kvfp8": lambda x: run_vllm(x, "fp8"), "plugin": run_plugin}
        children.get(a.child, lambda x: run_hf(x, a.child))(a)
        return 0

    model_dir(a)  # build once, before the children race for it
    argv = list(sys.argv[1:] if argv is None else argv)
    rows, failed = [], []
    for mode in [m.strip() for m in a.modes.split(",") if m.strip()]:
        if mode not in MODES:
            ap.error(f"unknown mode {mode}")
        t = time.perf_counter()
        print(f"== {mode}", flush=True)
        try:
            proc = subprocess.run([sys.executable, __file__, *argv, "--child", mode], capture_output=True,
                                  text=True, timeout=a.timeout)
            out, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out, rc = f"{exc.stdout or ''}{exc.stderr or ''}", 124
        if a.json:  # each child's whole output beside the JSON: the engine's own log (attention backend, graphs)
            Path(a.json).with_name(f"{Path(a.json).stem}-{mode}.log").write_text(out)
        recs = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
        if rc != 0 or not recs:
            failed.append(mode)
            print(f"{mode} failed (exit {rc}); last output:\n" + "\n".join(out.splitlines()[-40:]), flush=True)
            continue
        wall = time.perf_counter() - t
        for rec in recs:  # the plugin child reports two rows (its processors side by side on one engine)
            rec["wall_s"] = wall
            rows.append(rec)
            print(f"   {rec['mode']}: {rec['seconds']:.3f} s, {rec['out_tokens']} tokens (mode wall {wall:.0f} s)",
                  flush=True)
    if a.grpo_log:
        row = grpo_log_row(a.grpo_log, a)
        if row:
            rows.append(row)
    for r in rows:
        r["floor_s"] = rollout_floor(a, int(r["prompt_len"]))
    shape = (f"{a.size}, {a.batch} prompts x {a.n} samples, {a.tokens} new tokens, {a.clip_seconds:g} s clips, "
             f"prompt {rows[0]['prompt_len'] if rows else '?'} tokens")
    print(f"\nrollout batch ({shape}); {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(table(rows, a))
    for line in goals(rows):
        print(line)
    if a.json:
        Path(a.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": argv,
                                            "shape": shape, "rows": rows, "failed": failed}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
