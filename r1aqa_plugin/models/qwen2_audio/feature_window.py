"""Hook P: the actor's audio features travel cut to the clip and are padded back to Whisper's window in the forward.

Whisper's feature extractor pads every clip to 30 s (3,000 frames; 1.5 MB of fp32 at 128 mel bins), and verl
carries one copy per SAMPLE from the agent-loop worker to the actor: serialised, stored, concatenated per
micro-batch (``extract_multi_modal_inputs``) and copied to the GPU, in the reference pass and again in the update.
A 10 s clip fills a third of that window, the learning proof's 4 s clip under a seventh.

Cutting is exact. Qwen2-Audio's encoder masks the frames past a clip's end in attention and keeps only outputs of
valid positions, so those frames reach a kept output only through the two 3-wide convolutions in front (stride 1,
then 2). Encoder position j reads frames 2j-2 .. 2j+2, and the last kept position of a clip of L frames is
(L-1)//2, so nothing past frame L+1 is read: ``MARGIN`` = 2 frames past the end are enough, and the rest of the
window can be zeros. tests/test_feature_window.py checks logits and gradients bit for bit against the full window,
and that a margin of 1 is not enough.

verl already treats ``input_features`` and ``feature_attention_mask`` as variable-length keys and zero-pads them to
the longest row of a micro-batch; the wrapper of ``Qwen2AudioModel.forward`` pads that to the encoder's window.
``R1AQA_TRIM_FEATURES=0`` sends full windows (for A/B timing).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

TRIM_ENV = "R1AQA_TRIM_FEATURES"
MARGIN = 2  # frames past a clip's last valid frame that the encoder's convolutions read (module docstring)


def trim_enabled() -> bool:
    """Whether hook P cuts the actor's features (``R1AQA_TRIM_FEATURES`` unset or not "0")."""
    return os.environ.get(TRIM_ENV, "1") != "0"


def kept_frames(mask: np.ndarray, margin: int = MARGIN) -> int:
    """Frames to keep for a batch of frame masks ``(clips, frames)``: the last valid frame of any row + 1 + margin."""
    mask = np.asarray(mask)
    frames = mask.shape[-1]
    valid = np.flatnonzero(mask.reshape(-1, frames).any(axis=0))
    if valid.size == 0:
        return frames  # no valid frame: nothing to cut safely, leave the window alone
    return min(frames, int(valid[-1]) + 1 + margin)


def trim(features: np.ndarray, mask: np.ndarray, margin: int = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """``features (clips, mels, frames)`` and ``mask (clips, frames)`` cut after the last valid frame + margin."""
    keep = kept_frames(mask, margin)
    return np.ascontiguousarray(features[..., :keep]), np.ascontiguousarray(mask[..., :keep])


def encoder_window(audio_tower: Any) -> int:
    """Mel frames Qwen2-Audio's encoder takes (3,000: 1,500 positions after its stride-2 convolution)."""
    return int(audio_tower.config.max_source_positions * audio_tower.conv1.stride[0] * audio_tower.conv2.stride[0])


def pad_to_window(features: torch.Tensor, mask: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad cut ``features (batch, mels, T)`` and ``mask (batch, T)`` to ``frames``; longer input is an error."""
    have = features.shape[-1]
    if have > frames:
        raise ValueError(f"audio features have {have} mel frames; the encoder takes at most {frames}")
    if mask.shape[-1] != have:
        raise ValueError(f"feature_attention_mask has {mask.shape[-1]} frames but input_features {have}")
    if have == frames:
        return features, mask
    return F.pad(features, (0, frames - have)), F.pad(mask, (0, frames - have))


def make_model_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``Qwen2AudioModel.forward`` so cut features are padded back to the encoder's window first."""

    @functools.wraps(original)  # name, docstring and signature stay the original's (inspect, transformers)
    def forward(self: Any, input_ids: Any = None, input_features: torch.Tensor | None = None,
                attention_mask: Any = None, feature_attention_mask: torch.Tensor | None = None,
                *args: Any, **kwargs: Any) -> Any:
        if input_features is not None and feature_attention_mask is not None:
            input_features, feature_attention_mask = pad_to_window(
                input_features, feature_attention_mask, encoder_window(self.audio_tower))
        return original(self, input_ids, input_features, attention_mask, feature_attention_mask, *args, **kwargs)

    return forward
