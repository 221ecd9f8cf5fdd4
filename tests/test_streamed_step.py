"""Hook V's optimizer step by chunks (r1aqa_plugin/models/qwen2_audio/streamed_step.py) against one plain step, and
its two wrappers around verl's FSDPEngine. On the GPU: tests/test_gpu_hooks.py."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
from torch import nn

from r1aqa_plugin.models.qwen2_audio import streamed_step, verl_hooks


def _params(seed: int = 0) -> list[nn.Parameter]:
    torch.manual_seed(seed)
    return [nn.Parameter(torch.randn(*shape)) for shape in [(40, 30), (7,), (300,), (5, 5), (64, 2)]]


def _grads(params: list[nn.Parameter], seed: int) -> None:
    torch.manual_seed(seed)
    for i, p in enumerate(params):
        p.grad = None if i == 3 else torch.randn_like(p)  # one parameter gets no gradient this step


def _optimizer(params: list[nn.Parameter], foreach: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW([{"params": params[:3], "lr": 1e-3}, {"params": params[3:], "lr": 5e-3}],
                             weight_decay=0.01, foreach=foreach)


@pytest.mark.parametrize(("foreach", "overlap"), [(False, False), (True, False), (True, True)])
def test_a_step_by_chunks_equals_one_step_over_every_parameter(foreach: bool, overlap: bool) -> None:
    # overlap: side streams on CUDA only; on a CPU the same sequential step (the CUDA case: tests/test_gpu_hooks.py)
    plain, chunked = _params(), _params()
    opt_plain, opt_chunked = _optimizer(plain, foreach), _optimizer(chunked, foreach)
    schedules = [torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - 0.1 * step)
                 for opt in (opt_plain, opt_chunked)]
    counts = []
    for step in range(3):
        _grads(plain, step)
        _grads(chunked, step)
        opt_plain.step()
        # 1 KB chunks: (40, 30) alone (a parameter over the limit is a chunk of its own), then (7,), then (300,); the
        # second group's (64, 2) (its (5, 5) has no gradient)
        counts.append(streamed_step.streamed_step(opt_chunked, opt_chunked.step, 1024, overlap))
        for p, q in zip(plain, chunked):
            assert torch.equal(p, q)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()" warning
            for schedule in schedules:
                schedule.step()
    assert counts == [4, 4, 4]
    assert [len(g["params"]) for g in opt_chunked.param_groups] == [3, 2]  # the groups are whole again
    for p, q in zip(plain, chunked):
        for key, value in opt_plain.state[p].items():
            assert torch.equal(value, opt_chunked.state[q][key]), key


def test_a_stepped_moment_goes_back_into_its_host_copy_when_that_matches() -> None:
    home = torch.zeros(3, 4)
    stepped = torch.arange(12.0).reshape(3, 4)
    assert streamed_step.to_host(stepped, home) is home and torch.equal(home, stepped)  # no new host buffer
    # no host copy (the optimizer made the moment at this step), or one of another shape or dtype: a new copy
    for other in (None, torch.zeros(4, 3), torch.zeros(3, 4, dtype=torch.float64)):
        back = streamed_step.to_host(stepped, other)
        assert back is not other and torch.equal(back, stepped) and back.dtype == stepped.dtype


def test_chunks_keep_order_and_put_a_large_parameter_alone() -> None:
    sizes = [10, 10, 100, 5, 5, 5]
    params = [torch.zeros(n) for n in sizes]  # 4 bytes an element
    runs = list(streamed_step.chunks(params, 80))
    assert [[p.numel() for p in run] for run in runs] == [[10, 10], [100], [5, 5, 5]]
    assert list(streamed_step.chunks([], 80)) == []


@pytest.mark.parametrize("raw", ["0", "-3", "lots"])
def test_a_bad_chunk_size_is_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(streamed_step.CHUNK_ENV, raw)
    with pytest.raises(ValueError, match=f"{streamed_step.CHUNK_ENV}={raw!r}"):
        streamed_step.chunk_bytes()


@pytest.mark.parametrize(("raw", "expected"), [(None, True), ("1", True), ("0", False), ("yes", None)])
def test_overlapped_copies_are_the_default_and_a_bad_switch_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                      raw: str | None, expected: bool | None) -> None:
    if raw is None:
        monkeypatch.delenv(streamed_step.OVERLAP_ENV, raising=False)
    else:
        monkeypatch.setenv(streamed_step.OVERLAP_ENV, raw)
    if expected is None:
        with pytest.raises(ValueError, match=f"{streamed_step.OVERLAP_ENV}='yes'"):
            streamed_step.overlap_enabled()
    else:
        assert streamed_step.overlap_enabled() is expected


def test_verls_optimizer_step_streams_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """verl's own FSDPEngine.optimizer_step (gradient clipping, the finite check) on a stand-in engine: with
    R1AQA_OPTIMIZER_STREAM=1 the parameters come out as without it, and the optimizer's own step is restored."""
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    verl_hooks.install()
    results = []
    for stream in ("0", "1"):
        monkeypatch.setenv(streamed_step.STREAM_ENV, stream)
        monkeypatch.setenv(streamed_step.CHUNK_ENV, "0.001")  # ~1 KB: several chunks
        module = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 3))
        torch.manual_seed(0)
        for p in module.parameters():
            nn.init.normal_(p)
        engine = types.SimpleNamespace(module=module, optimizer=torch.optim.AdamW(module.parameters(), lr=1e-2),
                                       optimizer_config=types.SimpleNamespace(clip_grad=0.5), _qat_enabled=False,
                                       scaler=None)
        step_before = engine.optimizer.step
        for seed in range(2):
            torch.manual_seed(seed)
            module(torch.randn(4, 30)).square().sum().backward()
            FSDPEngine.optimizer_step(engine)
            engine.optimizer.zero_grad()
        assert engine.optimizer.step == step_before
        results.append([p.detach().clone() for p in module.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_train_mode_leaves_the_state_on_the_host_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def to(self, device, model=True, optimizer=True, grad=True):  # verl's FSDPEngine.to, as far as hook V is concerned
        calls.append((device, model, optimizer, grad))
        if False:
            load_fsdp_optimizer(self.optimizer, device)  # noqa: F821 (the source fact hook V checks for)

    wrapped = verl_hooks._make_state_left_on_host(to)
    monkeypatch.setenv(streamed_step.STREAM_ENV, "1")
    wrapped(None, device="cuda", model=False, optimizer=True, grad=False)
    wrapped(None, device="cpu", model=False, optimizer=True, grad=False)  # leaving train mode: offloaded as ever
    monkeypatch.setenv(streamed_step.STREAM_ENV, "0")
    wrapped(None, device="cuda", model=True, optimizer=True, grad=True)
    assert calls == [("cuda", False, False, False), ("cpu", False, True, False), ("cuda", True, True, True)]


def test_hook_v_fails_loudly_when_verl_changes() -> None:
    def to(self, device, model=True, optimizer=True, grad=True):  # a verl that moves the state another way
        return None

    def optimizer_step(self):  # a verl that steps through something else
        return self.optimizer.step_all()

    with pytest.raises(verl_hooks.AdapterError, match="hook V: .*FSDPEngine.to changed"):
        verl_hooks._make_state_left_on_host(to)
    with pytest.raises(verl_hooks.AdapterError, match="hook V: .*optimizer_step changed"):
        verl_hooks._make_streamed_step(optimizer_step)


@pytest.mark.parametrize("strategy", ["fsdp", "fsdp2"])
def test_hook_v_through_verls_fsdp_engine_gives_the_same_weights(bare_fsdp_engine, fsdp_engine_support,
                                                                  tiny_model_dir, monkeypatch, strategy):
    """verl's real FSDP engine on one CPU rank (FSDP1's flat parameters, FSDP2's DTensors), its own AdamW and
    optimizer step: one forward and backward on audio, then the step with and without hook V; the weights agree."""
    from verl.workers.config.optimizer import FSDPOptimizerConfig

    verl_hooks.install()
    support = fsdp_engine_support
    support.steer_to_cpu(monkeypatch.setattr)
    batch = support.audio_batch(str(tiny_model_dir))
    chunk_counts = []
    real = streamed_step.streamed_step
    monkeypatch.setattr(streamed_step, "streamed_step", lambda *a: chunk_counts.append(real(*a)) or chunk_counts[-1])

    def state(module) -> dict:
        return {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
                for name, p in module.named_parameters()}

    weights = []
    for stream in ("0", "1"):
        monkeypatch.setenv(streamed_step.STREAM_ENV, stream)
        monkeypatch.setenv(streamed_step.CHUNK_ENV, "0.5")  # 512 KB: the tiny model's units in several chunks
        engine = bare_fsdp_engine()
        support.build(engine, str(tiny_model_dir), strategy, None)
        engine.optimizer_config = FSDPOptimizerConfig(lr=1e-3, clip_grad=1.0)
        engine.optimizer = engine._build_optimizer(engine.module)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            engine.module(**batch).logits.float().pow(2).mean().backward()
        before = state(engine.module)
        engine.optimizer_step()
        weights.append(state(engine.module))
        assert sum(not torch.equal(before[n], w) for n, w in weights[-1].items()) > len(before) // 2  # it stepped
    assert len(chunk_counts) == 1 and chunk_counts[0] > 3  # hook V ran once, in several chunks, only when asked
    assert weights[0].keys() == weights[1].keys()
    changed = [n for n in weights[0] if not torch.equal(weights[0][n], weights[1][n])]
    assert not changed, changed[:5]
