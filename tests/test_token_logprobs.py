"""Hook M's chunked token log-probs: the values and gradients of log_softmax + gather, across chunk boundaries."""

from __future__ import annotations

import pytest
import torch

from r1aqa_plugin.models.qwen2_audio import token_logprobs as tl


def _naive(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])  # one row a chunk, a ragged last chunk, one chunk
@pytest.mark.parametrize("shape", [(37,), (3, 11)])   # verl's (tokens,) and a (batch, seq) layout
def test_values_and_gradients_match_log_softmax_gather(monkeypatch, chunk_rows, shape):
    vocab = 50
    monkeypatch.setattr(tl, "CHUNK_ELEMENTS", chunk_rows * vocab)
    g = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(*shape, vocab, generator=g, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, vocab, shape, generator=g)
    weights = torch.randn(*shape, generator=g, dtype=torch.float64)

    ours = tl.token_logprobs(logits, labels)
    (ours.double() * weights).sum().backward()
    grad_ours, logits.grad = logits.grad.clone(), None
    ref = _naive(logits.double(), labels)
    (ref.double() * weights).sum().backward()

    assert ours.dtype == torch.float32 and ours.shape == shape
    torch.testing.assert_close(ours.double(), ref.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_ours, logits.grad, rtol=1e-5, atol=1e-6)
    assert torch.equal(logits.detach(), logits.detach().clone())  # the backward's in-place ops left logits alone


def test_bf16_logits_give_fp32_log_probs_of_the_bf16_values():
    g = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(64, 1000, generator=g)).bfloat16().requires_grad_()
    labels = torch.randint(0, 1000, (64,), generator=g)
    out = tl.token_logprobs(logits, labels)
    out.sum().backward()
    assert out.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out, _naive(logits.detach(), labels), rtol=1e-6, atol=1e-6)
    # each row's gradient sums to ~0 (onehot - softmax), up to bf16 rounding
    assert logits.grad.float().sum(-1).abs().max() < 0.05


def test_no_graph_when_logits_need_no_grad():
    out = tl.token_logprobs(torch.randn(5, 9), torch.randint(0, 9, (5,)))
    assert not out.requires_grad


def test_mismatched_shapes_name_both():
    with pytest.raises(ValueError, match=r"logits \(4, 9\) do not match labels \(5,\)"):
        tl.token_logprobs(torch.randn(4, 9), torch.zeros(5, dtype=torch.long))
