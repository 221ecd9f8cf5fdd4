"""Answer generation for evaluation: Hugging Face transformers (CPU or GPU) and vLLM, same prompts, same outputs.

The prompt is Qwen2-Audio's chat template applied by the checkpoint's processor to one user turn holding the
audio item, then the rendered question (no system turn given, so the template adds its default one), exactly
as R1-AQA's test_mmau.py builds it. The template writes one ``<|AUDIO|>`` per clip; the HF processor expands
it to the clip's frame count, vLLM does its own expansion from the single placeholder.
Heavy imports (torch, transformers, vllm) happen inside the backends, not at module import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings; temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0

    def describe(self) -> str:
        """One line for the report."""
        if self.temperature == 0:
            return f"greedy, max_new_tokens={self.max_new_tokens}"
        mode = f"sampling T={self.temperature} top_p={self.top_p} seed={self.seed}"
        return f"{mode}, max_new_tokens={self.max_new_tokens}"


@dataclass(frozen=True)
class Request:
    """One question to answer: the rendered prompt text (user turn) and its 16 kHz mono clip."""

    text: str
    audio: np.ndarray


class Backend(Protocol):
    """Generates one completion (special tokens skipped) per request, in order."""

    name: str

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig | None = None) -> list[str]: ...


def chat_prompt(processor: Any, text: str) -> str:
    """Qwen2-Audio's chat prompt for one audio clip followed by ``text``, with the assistant turn opened."""
    messages = [
        {"role": "user", "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": text}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if prompt.count(processor.audio_token) != 1:
        raise RuntimeError(f"chat template produced {prompt.count(processor.audio_token)} audio placeholders, not 1")
    return prompt


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def vllm_importable() -> bool:
    """Whether vLLM can be imported here."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def default_backend() -> str:
    """vLLM when it is importable and a GPU is present, else transformers."""
    return "vllm" if vllm_importable() and cuda_available() else "hf"


class HFBackend:
    """transformers ``generate`` in batches of ``batch_size`` (left padding), as R1-AQA's test_mmau.py does."""

    name = "hf"

    def __init__(self, model_dir: str, sampling: SamplingConfig, *, batch_size: int = 8, dtype: str = "auto") -> None:
        import torch
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # bf16 on GPU (R1-AQA's setting); fp32 on CPU, where bf16 matmuls are slow or missing.
        torch_dtype = {"auto": torch.bfloat16 if self.device == "cuda" else torch.float32,
                       "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.processor.tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
        self.model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch_dtype).to(self.device)
        self.model.eval()
        self.sampling = sampling
        self.batch_size = batch_size
        self.dtype = str(torch_dtype).removeprefix("torch.")

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig | None = None) -> list[str]:
        """Completions for ``requests``, in order (``sampling``: this call's, else the backend's)."""
        import torch
        from tqdm import tqdm

        sampling = sampling or self.sampling
        torch.manual_seed(sampling.seed)
        greedy = sampling.temperature == 0
        options: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "do_sample": not greedy}
        if greedy:  # override whatever sampling defaults the checkpoint's generation_config carries
            options.update(temperature=None, top_p=None, top_k=None)
        else:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p)
        outputs: list[str] = []
        with tqdm(total=len(requests), desc="generate (hf)", unit="q") as bar:
            for start in range(0, len(requests), self.batch_size):
                batch = requests[start : start + self.batch_size]
                inputs = self.processor(
                    text=[chat_prompt(self.processor, r.text) for r in batch],
                    audio=[r.audio for r in batch],  # `audio=`: transformers 5 silently ignores `audios=`
                    sampling_rate=SAMPLE_RATE,
                    return_tensors="pt",
                    padding=True,
                ).to(self.device)
                inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
                with torch.inference_mode():
                    ids = self.model.generate(**inputs, **options)
                new = ids[:, inputs["input_ids"].shape[1] :]
                outputs += self.processor.batch_decode(new, skip_special_tokens=True)
                bar.update(len(batch))
        return outputs


class VLLMBackend:
    """vLLM offline generation with one audio item per prompt."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str,
        sampling: SamplingConfig,
        *,
        dtype: str = "auto",
        max_model_len: int = 4096,
        enforce_eager: bool = False,
        gpu_memory_utilization: float = 0.85,
        kv_cache_gib: float | None = None,
    ) -> None:
        from transformers import AutoProcessor

        if not cuda_available():
            # vLLM's CPU build: the platform is only detected with VLLM_TARGET_DEVICE=cpu (else "Device string must
            # not be empty"), and the KV cache is sized from VLLM_CPU_KVCACHE_SPACE (GiB; 1 suits small tests).
            os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.llm = LLM(
            model=model_dir,
            limit_mm_per_prompt={"audio": 1},
            dtype=dtype,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            seed=sampling.seed,
            **(self.gpu_memory_kwargs(gpu_memory_utilization, kv_cache_gib) if cuda_available() else {}),
        )
        self.sampling = sampling
        self.dtype = dtype

    @staticmethod
    def gpu_memory_kwargs(gpu_memory_utilization: float, kv_cache_gib: float | None) -> dict[str, Any]:
        """vLLM's GPU memory arguments: a fraction of the GPU, or (sharing a GPU) a fixed KV-cache size as well."""
        kwargs: dict[str, Any] = {"gpu_memory_utilization": gpu_memory_utilization}
        if kv_cache_gib is not None:
            # A fixed KV cache makes vLLM skip its start-up memory profile, whose check fails when another process
            # on the same GPU frees memory meanwhile (vllm/v1/worker/gpu_worker.py, determine_available_memory).
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        return kwargs

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig | None = None) -> list[str]:
        """Completions for ``requests``, in order (vLLM schedules the batching and shows its own progress bar;
        ``sampling``: this call's, else the backend's)."""
        from vllm import SamplingParams

        sampling = sampling or self.sampling
        # No per-request seed: vLLM gives each seeded request its own generator started from that seed, so every
        # question would draw the same random numbers, and a near-uniform answer would be sampled at the same place
        # of its distribution for all of them, as greedy decoding does. The engine's seed (LLM(seed=...)) keeps a
        # run reproducible. (vLLM's CPU build also fails on seeded requests whose prefill is chunked.)
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            skip_special_tokens=True,
        )
        prompts = [
            {"prompt": chat_prompt(self.processor, r.text), "multi_modal_data": {"audio": (r.audio, SAMPLE_RATE)}}
            for r in requests
        ]
        results = self.llm.generate(prompts, params, use_tqdm=True)
        return [result.outputs[0].text for result in results]


def make_backend(name: str, model_dir: str, sampling: SamplingConfig, *, batch_size: int, dtype: str,
                 gpu_memory_utilization: float = 0.85, kv_cache_gib: float | None = None) -> Backend:
    """Build the named backend ("hf" or "vllm")."""
    if name == "hf":
        return HFBackend(model_dir, sampling, batch_size=batch_size, dtype=dtype)
    if name == "vllm":
        # CPU: no CUDA graphs to capture, and a short context keeps the KV cache inside VLLM_CPU_KVCACHE_SPACE.
        on_gpu = cuda_available()
        return VLLMBackend(model_dir, sampling, dtype=dtype, enforce_eager=not on_gpu,
                           max_model_len=4096 if on_gpu else 2048, gpu_memory_utilization=gpu_memory_utilization,
                           kv_cache_gib=kv_cache_gib)
    raise ValueError(f"unknown backend {name!r}; use 'hf' or 'vllm'")
