"""Audio input throughput on this machine: decode + resample to 16 kHz + Whisper log-mel features, per clip.

    python benchmarks/data_throughput.py [--clips 24] [--seconds 10]

Prints samples/s for 10 s clips stored as wav or flac at 16 / 44.1 / 48 kHz (from bytes, as the parquet holds
them), then what one R1-AQA-shaped GRPO step needs: 16 prompts x 8 samples, so 128 feature extractions in the
worst case (features recomputed per sample) and 16 in the best (once per prompt), for a step every ~10 s.
Then, side by side, the adapter's caches and hooks against what they replace: the processor calls of one step with and
without the per-clip feature cache, a step's concurrent groups with the old caches and with OnceCache, and a step's
reward calls through verl's real ``AgentLoopWorker._compute_score`` without and with hook O. Also times synthetic-aqa
generation per family (rows/s, one process).

BLAS/OpenMP threads are pinned to 1 (override with OMP_NUM_THREADS): on 2 cores the feature extractor's
default thread pool oversubscribes and runs 3-5x slower and far noisier, and data workers run one per core
anyway. Rates are from the median per-clip time.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported, or it has no effect

import argparse  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf

from r1aqa_plugin.audio import SAMPLE_RATE, load_audio

PROMPTS_PER_STEP = 16  # R1-AQA: 8 GPUs x 1 prompt x 2 accumulation steps
SAMPLES_PER_PROMPT = 8
STEP_SECONDS = 10.0


def make_clips(n: int, seconds: float, sr: int, fmt: str) -> list[bytes]:
    """``n`` distinct clips (tones over noise) encoded as ``fmt`` at ``sr``."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    clips = []
    for _ in range(n):
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.standard_normal(len(t))
        buf = io.BytesIO()
        sf.write(buf, wave.astype(np.float32), sr, format=fmt, subtype="PCM_16")
        clips.append(buf.getvalue())
    return clips


def rate(fn, items) -> float:
    """Items per second for ``fn``, from the median time per item (after one warm-up call)."""
    fn(items[0])
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def main() -> None:
    """Print the throughput table and the GRPO-step requirement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24, help="clips per configuration")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--synthetic-rows", type=int, default=48, help="rows per synthetic family (0: skip)")
    parser.add_argument("--threads", type=int, default=20,
                        help="executor threads for the concurrent-group step (verl's agent-loop worker had 20)")
    args = parser.parse_args()

    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=128)  # Qwen2-Audio's front end: 128 mel bins, 30 s window

    def features(wave: np.ndarray) -> np.ndarray:
        out = extractor(wave, sampling_rate=SAMPLE_RATE, padding="max_length", return_attention_mask=True,
                        return_tensors="np")  # fmt: skip
        return out["input_features"]

    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, {args.clips} clips of {args.seconds:g} s per row, "
          f"one process, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")  # fmt: skip
    print("| format | source rate | decode+resample (clips/s) | features (clips/s) | total (clips/s) | ms/clip |")
    print("|---|---|---:|---:|---:|---:|")
    totals = []
    for fmt in ("WAV", "FLAC"):
        for sr in (16_000, 44_100, 48_000):
            clips = make_clips(args.clips, args.seconds, sr, fmt)
            waves = [load_audio(c) for c in clips]
            decode = rate(load_audio, clips)
            feats = rate(features, waves)
            total = rate(lambda c: features(load_audio(c)), clips)
            totals.append(total)
            print(f"| {fmt.lower()} | {sr} Hz | {decode:.1f} | {feats:.1f} | {total:.1f} | {1000 / total:.1f} |")

    worst = PROMPTS_PER_STEP * SAMPLES_PER_PROMPT / STEP_SECONDS
    best = PROMPTS_PER_STEP / STEP_SECONDS
    print()
    print(f"One GRPO step ({PROMPTS_PER_STEP} prompts x {SAMPLES_PER_PROMPT} samples, every {STEP_SECONDS:g} s) needs "
          f"{worst:.1f} clips/s if features are computed per sample ({PROMPTS_PER_STEP * SAMPLES_PER_PROMPT} per step), "
          f"{best:.1f} clips/s if once per prompt.")  # fmt: skip
    print(f"Slowest configuration here: {min(totals):.1f} clips/s on one core "
          f"= {min(totals) / worst:.1f}x the worst-case need.")  # fmt: skip

    post_rollout_features(args.seconds)
    concurrent_groups(args.seconds, args.threads)
    reward_calls(args.seconds)

    if args.synthetic_rows:
        from r1aqa_plugin.data import BuildReport, get_dataset

        print()
        print("| synthetic-aqa family | rows/s (one process, 4 s clips) |")
        print("|---|---:|")
        builder = get_dataset("synthetic-aqa").builder
        for family in ("sound", "music", "speech"):
            report = BuildReport("synthetic-aqa")
            start = time.perf_counter()
            rows = list(builder(report, size=args.synthetic_rows, tasks=family))
            elapsed = time.perf_counter() - start
            shown = f"{len(rows) / elapsed:.0f}" if rows else f"skipped: {'; '.join(report.notes)}"
            print(f"| {family} | {shown} |")


def step_processor() -> tuple[Any, str]:
    """The adapter's wrapped Qwen2-Audio processor (128 mel bins, 30 s window) and a one-clip chat prompt for it."""
    from r1aqa_plugin.models.qwen2_audio import processor as proc
    from r1aqa_plugin.models.qwen2_audio.builder import build_processor

    wrapped = proc.VerlQwen2AudioProcessor.wrap(build_processor())
    messages = [{"role": "user", "content": [{"type": "audio", "audio_url": "a.wav"}, {"type": "text", "text": "?"}]}]
    return wrapped, wrapped.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def noise_clips(seconds: float, seed: int) -> list[np.ndarray]:
    """One step's distinct clips (PROMPTS_PER_STEP) of 16 kHz noise, already decoded."""
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32) for _ in range(PROMPTS_PER_STEP)]


def post_rollout_features(seconds: float) -> None:
    """verl's two per-sample processor calls for one step (16 clips x 8 samples), side by side: the stock processor
    vs the adapter's per-clip feature cache (the prompt call with <|AUDIO|>, the post-rollout call without)."""
    from transformers import Qwen2AudioProcessor

    from r1aqa_plugin.models.qwen2_audio import processor as proc

    wrapped, prompt = step_processor()
    clips = noise_clips(seconds, 1)
    samples = [c for c in clips for _ in range(SAMPLES_PER_PROMPT)]  # verl repeats each prompt n times

    def one_step(call, text: str) -> float:
        proc._feature_cache.clear()
        start = time.perf_counter()
        for clip in samples:
            call(text=[text], audio=[clip], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return time.perf_counter() - start

    def stock(**kw):
        return Qwen2AudioProcessor.__call__(wrapped, **kw)

    def stock_features(**kw):  # what the post-rollout call cost before the cache: features per sample
        proc._feature_cache.clear()
        return wrapped(**kw)

    print()
    for label, text, plain_call in (("Prompt call (text with <|AUDIO|>)", prompt, stock),
                                    ("Post-rollout call (decoded text, no placeholder)", "decoded text", stock_features)):
        one_step(wrapped, text)  # warm-up
        plain = statistics.median(one_step(plain_call, text) for _ in range(3))
        cached = statistics.median(one_step(wrapped, text) for _ in range(3))
        print(f"{label}, one step ({len(samples)} samples of {len(clips)} {seconds:g} s clips, one process): "
              f"{plain:.2f} s computed per sample, {cached:.2f} s with the adapter's per-clip cache "
              f"({plain / cached:.1f}x).")  # fmt: skip



class PlainCache:
    """The per-clip cache as it was before OnceCache: a locked LRU whose concurrent misses all compute."""

    def __init__(self, capacity: int) -> None:
        from collections import OrderedDict
        from threading import Lock

        self.capacity, self.misses, self.hits = capacity, 0, 0
        self._values: OrderedDict = OrderedDict()
        self._lock = Lock()

    def get(self, key, compute):
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                self.hits += 1
                return self._values[key]
            self.misses += 1
        value = compute()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


def concurrent_groups(seconds: float, threads: int) -> None:
    """One step's audio work as verl's agent loop does it, side by side: every sample of a GRPO group submitted to a
    thread pool at once, each decoding its clip (bytes, as the parquet holds them) and making the prompt call; the
    caches as they were (concurrent misses all compute) vs OnceCache (they compute once)."""
    from concurrent.futures import ThreadPoolExecutor

    from r1aqa_plugin import audio
    from r1aqa_plugin.models.qwen2_audio import processor as proc
    from r1aqa_plugin.once_cache import OnceCache

    wrapped, prompt = step_processor()
    clips = make_clips(PROMPTS_PER_STEP, seconds, SAMPLE_RATE, "WAV")

    def sample(clip: bytes) -> None:
        wave = audio.load_audio_cached(clip)
        wrapped(text=[prompt], audio=[wave], sampling_rate=SAMPLE_RATE, return_tensors="pt")

    def one_step(cache_cls) -> tuple[float, int, int]:
        audio._decoded, proc._feature_cache = cache_cls(64), cache_cls(64)
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(sample, [c for c in clips for _ in range(SAMPLES_PER_PROMPT)]))
        return time.perf_counter() - start, audio._decoded.misses, proc._feature_cache.misses

    saved = audio._decoded, proc._feature_cache
    try:
        one_step(OnceCache)  # warm-up
        rows = {}
        for name, cls in (("plain cache (before)", PlainCache), ("OnceCache", OnceCache)):
            runs = [one_step(cls) for _ in range(3)]
            rows[name] = (statistics.median(r[0] for r in runs), runs[-1][1], runs[-1][2])
    finally:
        audio._decoded, proc._feature_cache = saved
    print()
    print(f"Concurrent groups: one step ({PROMPTS_PER_STEP} clips of {seconds:g} s x {SAMPLES_PER_PROMPT} samples, "
          f"{threads} threads, one process; median of 3)")  # fmt: skip
    print("| caches | step s | decodes | feature extractions |")
    print("|---|---:|---:|---:|")
    for name, (secs, decodes, extractions) in rows.items():
        print(f"| {name} | {secs:.2f} | {decodes} | {extractions} |")
    before, after = rows["plain cache (before)"][0], rows["OnceCache"][0]
    print(f"OnceCache: {before / after:.1f}x")


def reward_calls(seconds: float) -> None:
    """One step's reward calls (16 clips x 8 samples) through verl's real ``AgentLoopWorker._compute_score``, side by
    side: verl's own (the processor rerun per sample for position ids) vs the adapter's hook O (not rerun). The
    feature cache is warm, as after the prompt calls; the reward worker is a stand-in that answers at once."""
    import asyncio

    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput, AgentLoopWorker

    from r1aqa_plugin.models.qwen2_audio import processor as proc
    from r1aqa_plugin.models.qwen2_audio import verl_hooks

    verl_hooks.install()
    wrapped, prompt = step_processor()
    clips = noise_clips(seconds, 2)
    response = wrapped.tokenizer.encode("<answer>a choice</answer><|im_end|>", add_special_tokens=False)
    outputs = []
    for clip in clips:  # the prompt call fills the feature cache, as in verl's agent loop
        ids = wrapped(text=[prompt], audio=[clip], sampling_rate=SAMPLE_RATE, return_tensors="np")["input_ids"][0]
        outputs += [AgentLoopOutput(prompt_ids=ids.tolist(), response_ids=response, response_mask=[1] * len(response),
                                    multi_modal_data={"audios": [clip]}, num_turns=2, metrics=AgentLoopMetrics())
                    for _ in range(SAMPLES_PER_PROMPT)]

    class RewardWorker:  # what verl awaits: compute_score.remote(data) -> {"reward_score", "reward_extra_info"}
        class compute_score:  # noqa: N801
            @staticmethod
            async def remote(data):
                return {"reward_score": 0.0, "reward_extra_info": {}}

    worker = object.__new__(AgentLoopWorker)  # verl's class; only what its reward call reads
    worker.processor, worker.tokenizer = wrapped, wrapped.tokenizer
    worker.reward_loop_worker_handles, worker.mm_processor_kwargs = [RewardWorker], None
    runs = {"calls": 0}
    call = proc.VerlQwen2AudioProcessor.__call__

    def counted(self, *a, **k):
        runs["calls"] += 1
        return call(self, *a, **k)

    async def step() -> None:
        for out in outputs:
            out.reward_score = None
            await worker._compute_score([out], kwargs={"data_source": "synthetic-aqa"})

    def timed(enabled: bool) -> tuple[float, int]:
        os.environ[verl_hooks.SCORE_FEATURES_ENV] = "1" if enabled else "0"
        runs["calls"] = 0
        start = time.perf_counter()
        asyncio.run(step())
        return time.perf_counter() - start, runs["calls"]

    saved = os.environ.get(verl_hooks.SCORE_FEATURES_ENV)
    proc.VerlQwen2AudioProcessor.__call__ = counted
    try:
        timed(True), timed(False)  # warm-up
        rows = {}
        for name, enabled in (("verl's (processor rerun per sample)", False), ("hook O", True)):
            runs_ = [timed(enabled) for _ in range(3)]
            rows[name] = (statistics.median(r[0] for r in runs_), runs_[-1][1])
    finally:
        proc.VerlQwen2AudioProcessor.__call__ = call
        if saved is None:
            os.environ.pop(verl_hooks.SCORE_FEATURES_ENV, None)
        else:
            os.environ[verl_hooks.SCORE_FEATURES_ENV] = saved
    print()
    print(f"Reward calls: one step ({PROMPTS_PER_STEP} clips of {seconds:g} s x {SAMPLES_PER_PROMPT} samples) through "
          "verl's AgentLoopWorker._compute_score, one process; median of 3")  # fmt: skip
    print("| reward call | step s | processor runs |")
    print("|---|---:|---:|")
    for name, (secs, calls) in rows.items():
        print(f"| {name} | {secs:.2f} | {calls} |")
    before, after = rows["verl's (processor rerun per sample)"][0], rows["hook O"][0]
    print(f"hook O: {before / after:.1f}x")


if __name__ == "__main__":
    main()
