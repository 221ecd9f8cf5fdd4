"""Hook Z: layers that keep their activations instead of recomputing them give the same gradients, bit for bit."""

from __future__ import annotations

import pytest
import torch

from r1aqa_plugin.models.qwen2_audio import recompute, verl_hooks
from r1aqa_plugin.models.qwen2_audio.recompute import ENCODER_ENV, KEEP_ENV


def test_the_request_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENCODER_ENV, raising=False)
    monkeypatch.delenv(KEEP_ENV, raising=False)
    assert recompute.requested() == (True, 0)  # verl's own checkpointing: every layer recomputed
    monkeypatch.setenv(ENCODER_ENV, "0")
    monkeypatch.setenv(KEEP_ENV, "8")
    assert recompute.requested() == (False, 8)
    for bad in ("-1", "eight"):
        monkeypatch.setenv(KEEP_ENV, bad)
        with pytest.raises(ValueError, match=f"{KEEP_ENV}='{bad}': expected a number of decoder layers"):
            recompute.requested()


def _flags(module):
    from r1aqa_plugin.models.qwen2_audio.whisper_init import audio_tower_of

    return ([layer.gradient_checkpointing for layer in audio_tower_of(module).layers],
            [layer.gradient_checkpointing for layer in verl_hooks.language_model_of(module).layers])


def test_verls_module_build_keeps_the_asked_layers_in_the_actor_only(bare_fsdp_engine, monkeypatch):
    """verl's real FSDPEngine._build_module (hooks K and Z): the actor's encoder and last decoder layer stop
    recomputing; the forward-only reference, a build without checkpointing and a build without the request are
    left as verl makes them."""
    from verl.workers.config import FSDPEngineConfig

    verl_hooks.install()
    engine = bare_fsdp_engine()
    monkeypatch.setenv(ENCODER_ENV, "0")
    monkeypatch.setenv(KEEP_ENV, "1")
    engine.engine_config = FSDPEngineConfig()
    encoder, decoder = _flags(engine._build_module())
    assert not any(encoder) and decoder[:-1] == [True] * (len(decoder) - 1) and decoder[-1] is False
    engine.engine_config = FSDPEngineConfig(forward_only=True)
    assert all(sum(_flags(engine._build_module()), []))  # the reference: as verl builds it
    engine.engine_config = FSDPEngineConfig()
    object.__setattr__(engine.model_config, "enable_gradient_checkpointing", False)
    assert not any(sum(_flags(engine._build_module()), []))  # nothing to undo, nothing fails
    object.__setattr__(engine.model_config, "enable_gradient_checkpointing", True)
    monkeypatch.delenv(ENCODER_ENV)
    monkeypatch.delenv(KEEP_ENV)
    assert all(sum(_flags(engine._build_module()), []))
    monkeypatch.setenv(KEEP_ENV, "99")
    with pytest.raises(ValueError, match=f"{KEEP_ENV}=99: the decoder has \\d+ layers"):
        engine._build_module()


def test_kept_layers_run_once_and_the_gradients_are_unchanged(bare_fsdp_engine, fsdp_engine_support, tiny_model_dir,
                                                              monkeypatch):
    from verl.workers.config import FSDPEngineConfig

    from r1aqa_plugin.models.qwen2_audio.whisper_init import audio_tower_of

    verl_hooks.install()
    engine = bare_fsdp_engine()
    engine.engine_config = FSDPEngineConfig()
    batch = fsdp_engine_support.audio_batch(str(tiny_model_dir))
    got = {}
    for request in ("none", "kept"):
        if request == "kept":
            monkeypatch.setenv(ENCODER_ENV, "0")
            monkeypatch.setenv(KEEP_ENV, "1")
        module = engine._build_module().train()
        layers = [*audio_tower_of(module).layers, *verl_hooks.language_model_of(module).layers]
        calls = [0] * len(layers)
        for i, layer in enumerate(layers):  # counts each run of forward (hooks do not fire on a recompute)
            def counted(*args, _i=i, _forward=layer.forward, **kwargs):
                calls[_i] += 1
                return _forward(*args, **kwargs)

            layer.forward = counted
        module(**batch).logits.pow(2).mean().backward()
        got[request] = (calls, {n: p.grad.clone() for n, p in module.named_parameters()})
    (full_calls, full_grads), (kept_calls, kept_grads) = got["none"], got["kept"]
    encoder = len(audio_tower_of(module).layers)
    assert full_calls == [2] * len(layers)  # every layer recomputed in backward
    assert kept_calls == [1] * encoder + [2] * (len(layers) - encoder - 1) + [1]
    assert full_grads.keys() == kept_grads.keys()
    for name, grad in kept_grads.items():
        assert torch.equal(grad, full_grads[name]), name
