"""vLLM's Qwen2-Audio, plus a name mapper for the weights verl's FSDP actor pushes at every sync.

vLLM 0.24-0.33 load Qwen2-Audio with a bare ``AutoWeightsLoader`` that knows only the original checkpoint names;
transformers 5 names the same tensors ``model.language_model.*``, ``model.audio_tower.*``, ``lm_head.*``.
Original names pass through the mapper unchanged, so hub checkpoints still load.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from vllm.model_executor.models.qwen2_audio import Qwen2AudioForConditionalGeneration
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper

from r1aqa_plugin.models.qwen2_audio.names import V5_TO_ORIGINAL


class Qwen2AudioWithV5Names(Qwen2AudioForConditionalGeneration):
    """Qwen2-Audio for vLLM that accepts both original and transformers-5 parameter names."""

    r1aqa_accepts_v5_names = True  # checked by the verl side in every vLLM worker
    hf_to_vllm_mapper = WeightsMapper(orig_to_new_prefix=dict(V5_TO_ORIGINAL))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load weights under either naming; return the (vLLM) names loaded."""
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)
