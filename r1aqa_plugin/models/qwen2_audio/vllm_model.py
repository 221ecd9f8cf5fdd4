"""vLLM's Qwen2-Audio with two fixes verl's path needs; registered by ``vllm_plugin``.

1. Weight names. vLLM 0.24-0.33 load Qwen2-Audio with a bare ``AutoWeightsLoader`` that knows only the original
   checkpoint names; transformers 5 names the same tensors ``model.language_model.*``, ``model.audio_tower.*``,
   ``lm_head.*``, and that is what verl's FSDP actor pushes at every weight sync (vLLM starts on dummy weights,
   so even the first sync needs this). Original names pass through the mapper unchanged, and the
   ``language_model.model.model.*`` names transformers' save_pretrained writes (verl's hf_model export) are
   mapped back.
2. ``sampling_rate``. verl's agent loop sends ``mm_processor_kwargs={"sampling_rate": 16000}`` with every audio
   request; vLLM's Qwen2-Audio processor adds the same key itself (``dict(**mm_kwargs, sampling_rate=...)``) and
   fails with "got multiple values for keyword argument 'sampling_rate'". Audio reaching vLLM is already at the
   feature extractor's rate (AQADataset resamples to 16 kHz), so the request's copy is dropped.

vLLM builds its audio tower from transformers' ``Qwen2AudioEncoder``, which hook I (``encoder_dedup``) wraps for the
actor. vLLM's tower opts out: its start-up memory profile runs the encoder on identical dummy clips, and a
deduplicated profile would under-count the encoder's activations (vLLM's own encoder cache already shares
identical clips between requests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from vllm.model_executor.models.qwen2_audio import (
    Qwen2AudioDummyInputsBuilder,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioMultiModalProcessor,
    Qwen2AudioProcessingInfo,
)
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper
from vllm.multimodal import MULTIMODAL_REGISTRY

from r1aqa_plugin.models.qwen2_audio.names import SAVE_PRETRAINED_BUG, V5_TO_ORIGINAL


class Qwen2AudioProcessorOneRate(Qwen2AudioMultiModalProcessor):
    """vLLM's Qwen2-Audio processor that tolerates a request-level ``sampling_rate`` (fix 2)."""

    def _call_hf_processor(self, prompt: str, mm_data: Mapping[str, object], mm_kwargs: Mapping[str, Any],
                           tok_kwargs: Mapping[str, object]) -> Any:
        mm_kwargs = {k: v for k, v in mm_kwargs.items() if k != "sampling_rate"}
        return super()._call_hf_processor(prompt, mm_data, mm_kwargs, tok_kwargs)


@MULTIMODAL_REGISTRY.register_processor(Qwen2AudioProcessorOneRate, info=Qwen2AudioProcessingInfo,
                                        dummy_inputs=Qwen2AudioDummyInputsBuilder)
class Qwen2AudioWithV5Names(Qwen2AudioForConditionalGeneration):
    """Qwen2-Audio for vLLM that accepts original and transformers-5 parameter names (fix 1)."""

    r1aqa_accepts_v5_names = True  # checked by the verl side in every vLLM worker
    # prefixes apply in order; the save_pretrained fix runs first so it cannot meet a freshly mapped name
    hf_to_vllm_mapper = WeightsMapper(orig_to_new_prefix=dict((SAVE_PRETRAINED_BUG, *V5_TO_ORIGINAL)))

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.audio_tower.r1aqa_no_dedup = True  # see the module docstring

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load weights under either naming; return the (vLLM) names loaded."""
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)
