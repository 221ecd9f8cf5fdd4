"""Hook Y: put the audio features into the text embeddings without a device sync in the backward pass.

transformers' ``Qwen2AudioModel.forward`` selects the encoder's valid outputs with a boolean mask and writes them
over the ``<|AUDIO|>`` rows with ``masked_scatter``. The backward of both needs the number of selected elements, so
each runs ``nonzero()``, which waits until the GPU has caught up with everything queued before it. In the update that
wait falls near the end of every micro-batch's backward: a profile of the 7B's update on one H200 (``prof1``,
2026-11-30) showed the host blocked ~85 ms there per 8-row micro-batch, and the GPU then idle while the host
launched the audio encoder's backward, ~1.2 s of the update in all.

Here the same rows are found with ``nonzero()`` in the forward, where transformers already waits for its token
count check, and the merge is ``index_select`` + ``index_copy``, whose backward passes (``index_add`` and
``index_fill`` + ``index_select``) use those indices and need no sync. The result and the gradients are the same
values: ``masked_scatter`` fills the masked rows in row-major order with consecutive feature rows, which is what
``index_copy`` does with ascending row indices. tests/test_audio_merge.py checks logits and gradients bit for bit
against transformers' forward, and that no ``MaskedScatterBackward`` or boolean-index backward is left in the graph.

Only the path transformers takes for expanded prompts (a run of ``<|AUDIO|>`` per clip, what the plugin's
processor makes) is replaced; decode steps, precomputed ``inputs_embeds`` and the legacy one-token prompts go to
transformers' code. ``R1AQA_SYNC_FREE_MERGE=0`` turns the hook off (for A/B timing).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

import torch

MERGE_ENV = "R1AQA_SYNC_FREE_MERGE"
# What the replaced part of transformers' forward must contain; anything else and the hook refuses to install
EXPECTED_SOURCE = ("_get_feat_extract_output_lengths(", "create_bidirectional_mask(", "self.multi_modal_projector(",
                   "audio_features = audio_features[audio_features_mask]",
                   "inputs_embeds.masked_scatter(special_audio_mask, audio_features)")


def merge_enabled() -> bool:
    """Whether hook Y is on (``R1AQA_SYNC_FREE_MERGE`` unset or not "0")."""
    return os.environ.get(MERGE_ENV, "1") != "0"


def missing_source(forward: Callable[..., Any]) -> list[str]:
    """The statements of ``EXPECTED_SOURCE`` that transformers' ``Qwen2AudioModel.forward`` no longer has."""
    try:
        source = inspect.getsource(forward)
    except (OSError, TypeError):
        return list(EXPECTED_SOURCE)
    return [s for s in EXPECTED_SOURCE if s not in source]


def audio_features(model: Any, input_features: torch.Tensor, feature_attention_mask: torch.Tensor,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The projected encoder outputs ``(clips, positions, hidden)`` and the mask of valid positions, as transformers
    computes them."""
    from transformers.masking_utils import create_bidirectional_mask

    tower = model.audio_tower
    feat_lengths, out_lengths = tower._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))
    clips, _, mel_frames = input_features.shape
    positions = (mel_frames - 2) // 2 + 1
    seq_range = torch.arange(positions, dtype=feat_lengths.dtype, device=feat_lengths.device)
    valid_2d = (seq_range[None, :] < feat_lengths[:, None]).to(torch.long)
    dummy = torch.zeros((clips, positions, 1), dtype=dtype, device=input_features.device)
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=valid_2d)
    features = model.multi_modal_projector(tower(input_features, attention_mask=mask).last_hidden_state)
    kept = torch.arange(features.shape[1], device=features.device)[None, :] < out_lengths.to(features.device)[:, None]
    return features, kept


def merged_embeddings(model: Any, input_ids: torch.Tensor, input_features: torch.Tensor,
                      feature_attention_mask: torch.Tensor) -> torch.Tensor:
    """Text embeddings of ``input_ids`` with each ``<|AUDIO|>`` row replaced by the next valid audio feature."""
    embeds = model.get_input_embeddings()(input_ids)
    features, kept = audio_features(model, input_features, feature_attention_mask, embeds.dtype)
    rows = (input_ids == model.config.audio_token_id).flatten().nonzero().squeeze(1).to(embeds.device)
    keep = kept.flatten().nonzero().squeeze(1)
    if rows.numel() != keep.numel():
        raise ValueError(f"Audio features and audio tokens do not match, tokens: {rows.numel()}, "
                         f"features: {keep.numel()}")
    hidden = embeds.shape[-1]
    selected = features.reshape(-1, features.shape[-1]).index_select(0, keep).to(embeds.device, embeds.dtype)
    return embeds.reshape(-1, hidden).index_copy(0, rows, selected).view_as(embeds)


def _expanded(input_ids: torch.Tensor, audio_token_id: int) -> bool:
    """Whether the prompts carry runs of ``<|AUDIO|>`` (transformers' non-legacy path)."""
    audio = input_ids == audio_token_id
    return bool((audio[:, :-1] & audio[:, 1:]).any())


def make_model_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``Qwen2AudioModel.forward`` so the audio merge runs here, sync-free in backward, then the rest of it."""
    missing = missing_source(original)
    if missing and not merge_enabled():
        return original
    if missing:
        from r1aqa_plugin.models.qwen2_audio.verl_hooks import AdapterError

        raise AdapterError(f"hook Y: transformers' Qwen2AudioModel.forward no longer contains {missing}; set "
                           f"{MERGE_ENV}=0 to run without the hook")

    @functools.wraps(original)  # name, docstring and signature stay the original's (inspect, transformers)
    def forward(self: Any, input_ids: Any = None, input_features: torch.Tensor | None = None,
                attention_mask: Any = None, feature_attention_mask: torch.Tensor | None = None,
                *args: Any, **kwargs: Any) -> Any:
        if (args or not merge_enabled() or input_ids is None or input_features is None
                or feature_attention_mask is None or kwargs.get("inputs_embeds") is not None
                or input_ids.shape[1] == 1 or not _expanded(input_ids, self.config.audio_token_id)):
            return original(self, input_ids, input_features, attention_mask, feature_attention_mask, *args, **kwargs)
        device = self.audio_tower.device
        embeds = merged_embeddings(self, input_ids, input_features.to(device), feature_attention_mask.to(device))
        return original(self, None, None, attention_mask, None, **{**kwargs, "inputs_embeds": embeds})

    return forward
