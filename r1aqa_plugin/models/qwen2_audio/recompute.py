"""Hook Z: the actor recomputes fewer of Qwen2-Audio's layers in its backward, where GPU memory allows.

verl's ``model.enable_gradient_checkpointing`` checkpoints every layer: the audio encoder's 32 and the decoder's 32
run their forward twice in each update. On one H200 much of the update waits on the host's kernel launches (64% busy
at 8-row micro-batches, 79% at 16 with Liger: ``prof1``'s and ``prof1small``'s traces, docs/benchmarks.md), so a
recomputed forward costs its launches as well as its FLOPs:

- The audio encoder runs on one or two distinct clips a micro-batch (hook I), ~2 GB of activations a clip, and its
  recompute is ~800 small launches a micro-batch. ``R1AQA_ENCODER_RECOMPUTE=0`` keeps its activations instead.
- A decoder layer keeps ~1 GB of activations at 16 rows of R1-AQA's ~590 tokens.
  ``R1AQA_DECODER_KEEP_LAYERS=N`` keeps the last N layers' activations (N = 0 by default).

The maths is unchanged: a layer either stores its activations or recomputes them from the same inputs with the same
kernels. Applied to the actor after verl's module build (not to the forward-only reference), and only to models
that verl built with gradient checkpointing on. tests/test_recompute.py checks the gradients bit for bit against
full checkpointing and counts the forwards that run twice.
"""

from __future__ import annotations

import os
from typing import Any

ENCODER_ENV = "R1AQA_ENCODER_RECOMPUTE"
KEEP_ENV = "R1AQA_DECODER_KEEP_LAYERS"


def requested() -> tuple[bool, int]:
    """(the encoder recomputes, the number of last decoder layers that keep their activations), from the env."""
    raw = os.environ.get(KEEP_ENV, "0")
    try:
        keep = int(raw)
    except ValueError:
        keep = -1
    if keep < 0:
        raise ValueError(f"{KEEP_ENV}={raw!r}: expected a number of decoder layers (0 or more)")
    return os.environ.get(ENCODER_ENV, "1") != "0", keep


def checkpointed(layers: Any) -> list[Any]:
    """The layers of a ``ModuleList`` that gradient checkpointing would recompute."""
    return [layer for layer in layers if getattr(layer, "gradient_checkpointing", False)]


def apply(model: Any, encoder_recomputes: bool, keep: int) -> dict[str, int]:
    """Turn recompute off on the audio encoder (unless ``encoder_recomputes``) and on the last ``keep`` decoder
    layers (``requested()`` reads both from the env); return the counts."""
    from r1aqa_plugin.models.qwen2_audio.verl_hooks import language_model_of
    from r1aqa_plugin.models.qwen2_audio.whisper_init import audio_tower_of

    encoder_layers, decoder_layers = audio_tower_of(model).layers, language_model_of(model).layers
    if keep > len(decoder_layers):
        raise ValueError(f"{KEEP_ENV}={keep}: the decoder has {len(decoder_layers)} layers")
    encoder_kept = [] if encoder_recomputes else checkpointed(encoder_layers)
    decoder_kept = checkpointed(decoder_layers[len(decoder_layers) - keep:])
    for layer in encoder_kept + decoder_kept:
        layer.gradient_checkpointing = False
    return {"encoder_kept": len(encoder_kept), "decoder_kept": len(decoder_kept),
            "encoder_recomputed": len(checkpointed(encoder_layers)),
            "decoder_recomputed": len(checkpointed(decoder_layers))}
