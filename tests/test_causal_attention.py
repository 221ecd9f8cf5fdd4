"""Hook AA: verl's right-padded micro-batches reach Qwen2-Audio without a mask, and the log-probs and gradients of the
real tokens stay those of verl's masked forward."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from r1aqa_plugin.models.qwen2_audio import causal_attention, verl_hooks
from r1aqa_plugin.models.qwen2_audio.causal_attention import CAUSAL_ENV

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from causal_attention_bench import log_probs, verl_engine, verl_micro_batch  # noqa: E402  (verl's padded path)

TEXT = "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n{q}<|im_end|>\n<|im_start|>assistant\n"


def _rows(mask_rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.tensor(mask_rows, dtype=torch.int32)
    positions = (mask.cumsum(-1) - 1).clamp(min=0) * mask  # verl pads position ids with 0
    return mask, positions


def test_right_padded_rows_from_position_zero_are_recognised():
    mask, positions = _rows([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    assert causal_attention.right_padded(mask, positions)
    assert causal_attention.right_padded(*_rows([[1, 1, 1]]))  # no padding at all


@pytest.mark.parametrize("case", ["left padding", "a hole", "positions from 1", "3-D positions"])
def test_other_rows_are_refused(case):
    if case == "left padding":
        mask, positions = _rows([[0, 1, 1], [1, 1, 1]])
        positions = torch.tensor([[0, 0, 1], [0, 1, 2]])
    elif case == "a hole":
        mask, positions = _rows([[1, 0, 1], [1, 1, 1]])
    elif case == "positions from 1":
        mask, positions = _rows([[1, 1, 0], [1, 1, 1]])
        positions = positions + mask
    else:
        mask, positions = _rows([[1, 1, 0]])
        positions = positions.expand(3, 1, 3)
    assert not causal_attention.right_padded(mask, positions)


def test_refused_inputs_pass_unchanged_and_the_first_is_logged(monkeypatch, caplog):
    monkeypatch.setitem(causal_attention._fallbacks, "count", 0)
    mask, positions = _rows([[1, 0, 1]])
    inputs = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": mask, "position_ids": positions}
    with caplog.at_level(logging.WARNING, logger="r1aqa.adapter"):
        assert causal_attention.without_mask(inputs) is inputs
        assert causal_attention.without_mask(inputs) is inputs
    assert causal_attention.fallbacks() == 2
    assert sum("hook AA" in r.message for r in caplog.records) == 1
    mask, positions = _rows([[1, 1, 0]])
    dropped = causal_attention.without_mask({**inputs, "attention_mask": mask, "position_ids": positions})
    assert dropped["attention_mask"] is None and dropped["position_ids"] is None
    assert dropped["input_ids"] is inputs["input_ids"]


# ------------------------------------------------------------------- through verl's engine, on the tiny checkpoint
def _micro_batch(processor, questions: list[str], answers: list[int]):
    """verl's micro-batch as its padded path gets it: rows of prompt + response of unequal lengths."""
    rng = np.random.default_rng(3)
    rows, audio = [], []
    for q, n_answer in zip(questions, answers):
        clip = (0.2 * rng.standard_normal(16000 * 2)).astype(np.float32)
        enc = processor(text=[TEXT.format(q=q)], audio=[clip], sampling_rate=16000, return_tensors="pt")
        rows.append(torch.cat([enc["input_ids"][0], torch.from_numpy(rng.integers(100, 1000, n_answer))]))
        audio.append({"input_features": enc["input_features"], "feature_attention_mask": enc["feature_attention_mask"]})
    return verl_micro_batch(rows, audio, processor.tokenizer.pad_token_id)


def _pass(model, engine, micro_batch, monkeypatch, enabled: bool):
    """One forward and backward as verl's forward_step runs it: inputs, model, log-probs of every real token."""
    monkeypatch.setenv(CAUSAL_ENV, "1" if enabled else "0")
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append((kwargs.get("attn_mask") is None, bool(kwargs.get("is_causal")), args[0].shape[-2]))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model.zero_grad()
    inputs, _ = engine.prepare_model_inputs(micro_batch)
    values = log_probs(model, engine, micro_batch)
    values.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    monkeypatch.undo()
    return inputs, values.detach(), grads, seen


def test_verls_padded_pass_gives_the_masked_log_probs_and_gradients(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    verl_hooks.install()
    assert getattr(_target(), "__r1aqa_patched__", False)
    engine = verl_engine(model)
    micro_batch = _micro_batch(processor, ["Which sound?", "What is the loudest sound in this clip?", "Why?"],
                               [7, 3, 11])

    masked_inputs, want, want_grads, masked_calls = _pass(model, engine, micro_batch, monkeypatch, enabled=False)
    inputs, got, grads, calls = _pass(model, engine, micro_batch, monkeypatch, enabled=True)

    assert masked_inputs["attention_mask"] is not None and inputs["attention_mask"] is None
    assert inputs["position_ids"] is None and masked_inputs["position_ids"] is not None
    longest = int(micro_batch["input_ids"].offsets().diff().max())  # the decoder's calls: the padded rows' length
    decoder_calls = [c for c in calls if c[2] == longest]
    assert decoder_calls and all(no_mask and causal for no_mask, causal, _ in decoder_calls)
    masked_decoder = [c for c in masked_calls if c[2] == longest]
    assert masked_decoder and not any(no_mask for no_mask, _, _ in masked_decoder)  # the control did use the mask
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert grads.keys() == want_grads.keys() and any("language_model" in n for n in grads)
    for name, grad in grads.items():
        # fp32 sums in another order (causal kernel vs masked one): an embedding row summed over many positions can
        # differ by ~1e-4 of itself, so the bounds are relative to the gradient's own size, not a fixed 1e-6
        want_grad = want_grads[name]
        error = float((grad - want_grad).norm() / want_grad.norm().clamp(min=1e-12))
        assert error < 1e-5, f"{name}: relative L2 error {error:.2e}"
        largest = float((grad - want_grad).abs().max() / want_grad.abs().max().clamp(min=1e-12))
        assert largest < 1e-5, f"{name}: largest error {largest:.2e} of its largest entry"


def test_other_models_keep_verls_inputs(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    verl_hooks.install()
    engine = verl_engine(model)
    engine.model_config = types.SimpleNamespace(hf_config=types.SimpleNamespace(model_type="qwen2"))
    monkeypatch.setenv(CAUSAL_ENV, "1")
    inputs, _ = engine.prepare_model_inputs(_micro_batch(processor, ["Which?", "Which sound is it?"], [2, 4]))
    assert inputs["attention_mask"] is not None and inputs["position_ids"] is not None


def _target():
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    return FSDPEngineWithLMHead.prepare_model_inputs
