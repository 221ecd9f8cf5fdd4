"""Hook Y: the audio merge without a device sync in backward gives transformers' outputs and gradients, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r1aqa_plugin.models.qwen2_audio import audio_merge, verl_hooks
from r1aqa_plugin.models.qwen2_audio.audio_merge import MERGE_ENV

TEXT = "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWhich sound?<|im_end|>\n"
# backward nodes whose kernels call nonzero() and so wait for the GPU: transformers' masked scatter and boolean select
# (an IndexBackward0 with an integer index, hook I's gather, needs no sync)
SYNCING = {"MaskedScatterBackward0", "IndexBackward0 (boolean)"}


def _inputs(processor, seconds: list[float]) -> dict:
    """Expanded prompts (a run of <|AUDIO|> per clip, as the plugin's processor makes them), clips of unequal length
    (different numbers of valid encoder positions), one clip twice (hook I's dedup path)."""
    rng = np.random.default_rng(5)
    clips = [(0.2 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds]
    clips.append(clips[0])
    batch = processor(text=[TEXT] * len(clips), audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)
    return dict(batch)


def _node_names(tensor: torch.Tensor) -> set[str]:
    seen, names, todo = set(), set(), [tensor.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        name = type(fn).__name__
        if name == "IndexBackward0" and any(i is not None and i.dtype == torch.bool for i in fn._saved_indices):
            name += " (boolean)"
        names.add(name)
        todo.extend(nxt for nxt, _ in fn.next_functions)
    return names


def _run(model, inputs, monkeypatch, enabled: bool):
    monkeypatch.setenv(MERGE_ENV, "1" if enabled else "0")
    model.zero_grad()
    out = model(**inputs)
    nodes = _node_names(out.logits)
    out.logits.pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads, nodes


def test_merge_matches_transformers_bit_for_bit_without_syncing_backward_nodes(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    inputs = _inputs(processor, [1.0, 2.5, 0.4])
    ref_logits, ref_grads, ref_nodes = _run(model, inputs, monkeypatch, enabled=False)
    logits, grads, nodes = _run(model, inputs, monkeypatch, enabled=True)
    assert torch.equal(logits, ref_logits)
    assert grads.keys() == ref_grads.keys() and any("audio_tower" in n for n in grads)  # the encoder is trained
    for name, grad in grads.items():
        assert torch.equal(grad, ref_grads[name]), name
    # transformers' graph has both syncing nodes (so this check can fail); the hook's has neither
    assert SYNCING <= ref_nodes
    assert not SYNCING & nodes and {"IndexCopyBackward0", "IndexSelectBackward0"} <= nodes


def test_other_calls_take_transformers_path(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    monkeypatch.setenv(MERGE_ENV, "1")
    inputs = _inputs(processor, [1.0])
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with torch.no_grad():  # text only, and precomputed embeddings: nothing to merge, same result as transformers
        text = {k: inputs[k] for k in ("input_ids", "attention_mask")}
        assert model(**text).logits.shape[:2] == inputs["input_ids"].shape
        assert torch.equal(model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits,
                           model(**text).logits)


def test_token_and_feature_counts_must_agree(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    monkeypatch.setenv(MERGE_ENV, "1")
    inputs = _inputs(processor, [1.0])
    ids = inputs["input_ids"].clone()
    first = int((ids[0] == model.config.audio_token_id).nonzero()[0])
    ids[:, first] = processor.tokenizer.convert_tokens_to_ids("<|im_start|>")  # one <|AUDIO|> fewer per row
    with pytest.raises(ValueError, match=r"Audio features and audio tokens do not match, tokens: \d+, features: \d+"):
        model(**{**inputs, "input_ids": ids})


def test_a_changed_transformers_forward_fails_loudly_unless_the_hook_is_off(monkeypatch):
    def forward(self, input_ids=None):  # a forward without transformers' merge statements
        return input_ids

    assert audio_merge.missing_source(forward) == list(audio_merge.EXPECTED_SOURCE)
    monkeypatch.setenv(MERGE_ENV, "1")
    with pytest.raises(verl_hooks.AdapterError, match=f"hook Y.*{MERGE_ENV}=0"):
        audio_merge.make_model_forward(forward)
    monkeypatch.setenv(MERGE_ENV, "0")
    assert audio_merge.make_model_forward(forward) is forward


def test_the_installed_transformers_has_what_the_hook_replaces():
    import transformers.models.qwen2_audio.modeling_qwen2_audio as modeling

    verl_hooks.install()
    wrapped = modeling.Qwen2AudioModel.forward
    while hasattr(wrapped, "__wrapped__"):  # hooks P and Y, then transformers' decorators
        wrapped = wrapped.__wrapped__
    assert audio_merge.missing_source(wrapped) == []
