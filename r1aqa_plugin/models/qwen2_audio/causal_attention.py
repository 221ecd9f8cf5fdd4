"""Hook AA: verl's padded forward asks sdpa for causal attention without a mask, so sdpa picks its flash kernel.

Without flash-attn (which cannot be installed on the lent H200s) the recipes run verl 0.9.1's FSDP engine with
``use_remove_padding=False``. That path pads each micro-batch's rows on the right to the longest and hands the model
the 0/1 mask and each row's position ids. Whenever one row is shorter than the longest (prompts of 318-323 tokens,
responses ending early), transformers turns the mask into a 4-D boolean mask for sdpa. verl's workers import vLLM's
CUDA platform module, which turns sdpa's cuDNN kernels off for the whole process, so a masked call there runs the
memory-efficient kernel, and that kernel computes every query against every key: it does not skip the upper
triangle. In the 7B's profiled step on one H200 (``prof1small``, 2026-12-01) the decoder's attention took 1.33 s
that way, at ~1.2 ms a forward call and ~2.8 ms a backward call for 16 rows of 589 tokens. The same trace's few
unmasked calls ran sdpa's flash kernel at ~0.4 and ~0.9 ms. Measured since (``benchmarks/causal_attention_bench.py``,
one 7B micro-batch of 16 rows through verl's padded path, cuDNN off): the decoder's attention 144 -> 52 ms of GPU
time in an update pass, the pass 65 ms faster; in verl's whole step the gain was inside the run-to-run spread.

Under a causal mask, right padding never reaches a real token: the token at position i attends to keys j <= i, and
those are all real. verl reads only each row's real positions (it narrows the logits to each row's length), and they
are at positions 0..L-1, where the model's own default position ids put them. So the mask and the position ids carry
nothing the model needs. The wrapper drops both; transformers then passes ``is_causal=True`` to sdpa with no mask.
Padded positions now attend to real tokens and to padding; their outputs are thrown away and get no gradient.

Each micro-batch is checked first: every row's mask must be ones and then zeros, with position ids 0..L-1 on the
ones. Otherwise the inputs go through unchanged, and the first such batch is logged. The check waits for the GPU
once, right after verl's own wait for the micro-batch's longest row, while the GPU has nothing queued. Without the
drop, transformers waits once as well: it checks whether the mask is all ones. ``R1AQA_CAUSAL_ATTENTION=0`` turns the
hook off (for A/B timing).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

logger = logging.getLogger("r1aqa.adapter")

CAUSAL_ENV = "R1AQA_CAUSAL_ATTENTION"
_fallbacks = {"count": 0}


def enabled() -> bool:
    """Whether hook AA is on (``R1AQA_CAUSAL_ATTENTION`` unset or not "0")."""
    return os.environ.get(CAUSAL_ENV, "1") != "0"


def right_padded(attention_mask: torch.Tensor, position_ids: torch.Tensor) -> bool:
    """Whether every row is real tokens at positions 0..L-1 followed only by padding (one device sync)."""
    if attention_mask.dim() != 2 or position_ids.shape != attention_mask.shape:
        return False
    real = attention_mask.bool()
    expected = torch.arange(real.shape[1], device=position_ids.device)
    ones_then_zeros = (real[:, 1:] <= real[:, :-1]).all()
    positions_from_zero = ((position_ids == expected) | ~real).all()
    return bool(ones_then_zeros & positions_from_zero)


def without_mask(model_inputs: dict[str, Any]) -> dict[str, Any]:
    """verl's model inputs with the padding mask and position ids dropped when the rows are right-padded from
    position 0; the inputs unchanged otherwise."""
    mask, positions = model_inputs.get("attention_mask"), model_inputs.get("position_ids")
    if not isinstance(mask, torch.Tensor) or not isinstance(positions, torch.Tensor):
        return model_inputs
    if not right_padded(mask, positions):
        _fallbacks["count"] += 1
        if _fallbacks["count"] == 1:
            logger.warning("hook AA: a micro-batch's rows are not right-padded with positions from 0 (mask %s, "
                           "position ids %s); it keeps verl's mask (sdpa's masked kernel)",
                           tuple(mask.shape), tuple(positions.shape))
        return model_inputs
    return {**model_inputs, "attention_mask": None, "position_ids": None}


def fallbacks() -> int:
    """How many micro-batches this process sent with verl's mask because they were not right-padded."""
    return _fallbacks["count"]
