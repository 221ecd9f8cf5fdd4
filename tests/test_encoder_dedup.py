"""Hook I: the audio encoder runs once per distinct clip of a batch, with the same outputs and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r1aqa_plugin.models.qwen2_audio import verl_hooks
from r1aqa_plugin.models.qwen2_audio.encoder_dedup import DEDUP_ENV, distinct_rows, stats


def test_distinct_rows_groups_equal_rows():
    a, b = torch.randn(4, 30), torch.randn(4, 30)
    x = torch.stack([a, b, a, a, b])
    index, inverse = distinct_rows(x)
    assert index.tolist() == [0, 1] and inverse.tolist() == [0, 1, 0, 0, 1]
    assert torch.equal(x[index][inverse], x)


def test_distinct_rows_is_none_when_nothing_repeats():
    assert distinct_rows(torch.randn(3, 4, 5)) is None
    assert distinct_rows(torch.randn(1, 4, 5)) is None


def test_a_fingerprint_collision_is_caught_by_the_exact_comparison():
    # float32 sums of 1e8-sized values lose a +-1 change: same fingerprint, different rows
    a = torch.full((1, 1000), 1e8)
    b = a.clone()
    b[0, 10] += 8.0
    b[0, 11] -= 8.0
    flat = torch.cat([a, b])
    keys = torch.stack([flat.sum(1), (flat * torch.linspace(1.0, 2.0, 1000)).sum(1)], 1)
    assert torch.equal(keys[0], keys[1]) and not torch.equal(a, b)
    assert distinct_rows(flat) is None


def test_rows_with_equal_features_but_different_masks_are_not_merged():
    x = torch.zeros(2, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    assert distinct_rows(x, mask) is None
    assert distinct_rows(x, mask[[0, 0]]) is not None


@pytest.fixture(scope="module")
def model_and_inputs(tiny_model_dir):
    import transformers.models.qwen2_audio.modeling_qwen2_audio as modeling
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    verl_hooks.install()
    assert getattr(modeling.Qwen2AudioEncoder.forward, "__r1aqa_patched__", False)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(16000 * s)).astype(np.float32) for s in (2, 3)]
    text = "<|audio_bos|><|AUDIO|><|audio_eos|>Which sound is it?"
    order = [0, 1, 0, 0, 1, 1]  # two clips, three copies each, interleaved as after verl's balance_batch
    inputs = processor(text=[text] * len(order), audio=[clips[i] for i in order], sampling_rate=16000,
                       return_tensors="pt", padding=True)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model, dict(inputs)


def _run(model, inputs, monkeypatch, enabled: bool):
    monkeypatch.setenv(DEDUP_ENV, "1" if enabled else "0")
    model.zero_grad()
    before = stats()
    out = model(**inputs)
    out.logits.float().pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if "audio_tower" in n and p.grad is not None}
    encoded = stats()["encoded"] - before["encoded"]
    return out.logits.detach(), grads, encoded


def test_dedup_gives_the_same_logits_and_encoder_gradients(model_and_inputs, monkeypatch):
    model, inputs = model_and_inputs
    model.train()
    logits_off, grads_off, encoded_off = _run(model, inputs, monkeypatch, enabled=False)
    logits_on, grads_on, encoded_on = _run(model, inputs, monkeypatch, enabled=True)
    assert (encoded_off, encoded_on) == (6, 2)
    torch.testing.assert_close(logits_on, logits_off, rtol=1e-5, atol=1e-5)
    assert grads_on.keys() == grads_off.keys() and len(grads_on) > 10
    for name in grads_off:
        torch.testing.assert_close(grads_on[name], grads_off[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["dropout", "attention_dropout", "activation_dropout"])
def test_no_dedup_under_encoder_dropout_in_training(model_and_inputs, monkeypatch, kind):
    model, inputs = model_and_inputs
    encoder = model.model.audio_tower if hasattr(model, "model") else model.audio_tower
    monkeypatch.setattr(encoder.config, kind, 0.1)
    model.train()
    _, _, encoded = _run(model, inputs, monkeypatch, enabled=True)
    assert encoded == 6
    model.eval()
    with torch.no_grad():
        before = stats()["encoded"]
        model(**inputs)
        assert stats()["encoded"] - before == 2
