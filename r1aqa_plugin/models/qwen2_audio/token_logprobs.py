"""Hook M: per-token log-probs of the sampled tokens in a few chunked kernels, not one Python iteration per token.

verl 0.9.1 takes token log-probs from flash-attn's Triton cross-entropy when flash-attn is installed. Without it
(flash-attn cannot be installed on the lent H200's CUDA 13 / torch 2.11 stack, nor on a CPU) it falls back to
``logprobs_from_logits_v2``, which loops in Python over the rows of the logits it is given. The FSDP engine gives it
``(tokens, vocab)`` logits, so one micro-batch of 64 sequences x 190 tokens is ~12,000 iterations of a log-softmax
over Qwen2's 151,936-token vocabulary, and as many autograd nodes in the backward.

Here the same quantity, ``logit[label] - logsumexp(logits)`` in fp32, is computed over chunks of rows that keep each
chunk's fp32 temporaries under ~1 GiB, with a hand-written backward (``grad * (onehot(label) - softmax)``, the
softmax recomputed per chunk from the saved log-sum-exp). Saved for backward: the logits, which the model's graph
holds anyway, and one fp32 per row. The result is fp32, as flash-attn's kernel returns; verl's loop returns bf16
for bf16 logits. ``R1AQA_CHUNKED_LOGPROBS=0`` turns the hook off (for A/B timing).
"""

from __future__ import annotations

import os

import torch

CHUNK_ELEMENTS = 1 << 28  # fp32 elements per chunk: 1 GiB of temporaries
CHUNKED_ENV = "R1AQA_CHUNKED_LOGPROBS"


def chunked_enabled() -> bool:
    """Whether hook M is on (``R1AQA_CHUNKED_LOGPROBS`` unset or not "0")."""
    return os.environ.get(CHUNKED_ENV, "1") != "0"


def _rows_per_chunk(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, vocab))


class _TokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor,  # type: ignore[override]
                labels: torch.Tensor) -> torch.Tensor:
        rows = _rows_per_chunk(logits.shape[-1])
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], rows):
            lse[start:start + rows] = torch.logsumexp(logits[start:start + rows].float(), dim=-1)
        picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1).float()
        ctx.save_for_backward(logits, labels, lse)
        return picked - lse

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, labels, lse = ctx.saved_tensors  # type: ignore[attr-defined]
        rows = _rows_per_chunk(logits.shape[-1])
        grad = grad.float()
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[0], rows):
            end = start + rows
            g = grad[start:end, None]
            # a copy even for fp32 logits: the in-place ops below must not touch the saved tensor
            part = logits[start:end].to(torch.float32, copy=True).sub_(lse[start:end, None]).exp_().mul_(-g)
            part.scatter_add_(-1, labels[start:end, None], g)
            out[start:end] = part
        return out, None


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] in fp32 for logits (..., vocab) and labels (...), differentiable in logits."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"token_logprobs: logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    flat = _TokenLogProbs.apply(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long())
    return flat.view(labels.shape)
