"""Hook I: run Qwen2-Audio's audio encoder once per distinct clip of a forward batch.

GRPO scores every prompt's clip in n samples (R1-AQA: 8), and verl batches those samples together in the actor's
old-log-prob, reference and update passes, so a micro-batch often holds the same ``input_features`` row several
times. The encoder (Whisper-large, 32 layers over a padded 30 s window: ~2.3 TFLOP per row, about a fifth of a
7B forward at R1-AQA's lengths) then computes identical outputs again and again. Running it on the distinct rows
and gathering the outputs back is exact: a forward is a per-row function of fixed weights, and in backward the
gather sums the copies' gradients, which is what the duplicated rows would have contributed.

Rows are grouped by a fingerprint and then compared element by element, so a fingerprint collision can only cost
the saving, never correctness. ``R1AQA_ENCODER_DEDUP=0`` turns it off (for A/B timing); an encoder with
``r1aqa_no_dedup = True`` (vLLM's tower, see ``vllm_model``) is left alone.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch

from r1aqa_plugin.models.qwen2_audio.verl_hooks import _trace

DEDUP_ENV = "R1AQA_ENCODER_DEDUP"

_stats = {"calls": 0, "rows": 0, "encoded": 0}
_DROPOUTS = ("dropout", "attention_dropout", "activation_dropout")  # Qwen2-Audio-7B: all 0.0


def dedup_enabled() -> bool:
    """Whether hook I is on (``R1AQA_ENCODER_DEDUP`` unset or not "0")."""
    return os.environ.get(DEDUP_ENV, "1") != "0"


def stats() -> dict[str, int]:
    """Encoder calls, rows given and rows really encoded so far in this process."""
    return dict(_stats)


def distinct_rows(features: torch.Tensor, mask: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(index, inverse)`` with ``features[index][inverse] == features`` (and the same for ``mask``), or None
    when every row is distinct."""
    rows = features.shape[0]
    if rows < 2:
        return None
    flat = features.reshape(rows, -1)
    # Two weighted sums make accidental equality of different clips rare; equal rows always give equal sums
    # (same kernel, same reduction order per row).
    values = flat.float()
    weights = torch.linspace(1.0, 2.0, flat.shape[1], device=flat.device, dtype=torch.float32)
    keys = torch.stack([values.sum(1), (values * weights).sum(1)], 1).tolist()
    first: dict[tuple[float, float], int] = {}
    index: list[int] = []
    inverse: list[int] = []
    for row, key in enumerate(map(tuple, keys)):
        slot = first.get(key)
        if slot is None:
            slot = first[key] = len(index)
            index.append(row)
        inverse.append(slot)
    if len(index) == rows:
        return None
    index_t = torch.tensor(index, device=features.device)
    inverse_t = torch.tensor(inverse, device=features.device)
    representative = index_t[inverse_t]
    same = torch.equal(flat, flat[representative])
    if same and mask is not None:
        same = torch.equal(mask, mask[representative])
    return (index_t, inverse_t) if same else None


def _expand(value: Any, inverse: torch.Tensor, rows: int) -> Any:
    """Gather a per-distinct-row output back to the full batch (tensors and tuples of tensors)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
        return value[inverse]
    if isinstance(value, tuple):
        return tuple(_expand(v, inverse, rows) for v in value)
    return value


def make_encoder_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``Qwen2AudioEncoder.forward`` so identical rows of a batch are encoded once."""

    @functools.wraps(original)  # name, docstring and signature stay the original's (inspect, transformers)
    def forward(self: Any, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        _stats["calls"] += 1
        _stats["rows"] += input_features.shape[0]
        # Dropout would draw a different mask per copy; deduplicating would change the training noise.
        noisy = self.training and any((getattr(self.config, name, 0.0) or 0.0) > 0 for name in _DROPOUTS)
        skip = noisy or getattr(self, "r1aqa_no_dedup", False) or not dedup_enabled()
        found = None if skip else distinct_rows(input_features, attention_mask)
        if found is None:
            _stats["encoded"] += input_features.shape[0]
            return original(self, input_features, attention_mask, **kwargs)
        index, inverse = found
        _stats["encoded"] += index.shape[0]
        _trace("audio encoder", f"{input_features.shape[0]} rows -> {index.shape[0]} distinct clips encoded")
        out = original(self, input_features[index], None if attention_mask is None else attention_mask[index],
                       **kwargs)
        if isinstance(out, tuple):  # return_dict=False
            return _expand(out, inverse, index.shape[0])
        for key in list(out.keys()):
            out[key] = _expand(out[key], inverse, index.shape[0])
        return out

    return forward
