"""Hooks P, R, S, T, U, V, X, Y, AA and AB on a CUDA GPU: what the CPU tests cannot show (bf16 kernels, FSDP's real
wrapping, FSDP2's CPU offload policy, optimizer state moved between host and GPU, Liger's Triton kernels, device
syncs, sdpa's choice of kernel). Skipped without CUDA; run on the lent H200 with
``python -m pytest -m gpu tests/test_gpu_hooks.py``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from r1aqa_plugin.models.qwen2_audio import verl_hooks

pytestmark = pytest.mark.gpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_cut_features_give_the_same_bf16_logits_on_the_gpu():
    """Hook P's exactness with the GPU's bf16 kernels (sdpa, cuDNN convolutions), clips of 2-10 s."""
    from feature_transfer_bench import model_check

    check = model_check("tiny", "cuda")
    assert check["dtype"] == "bfloat16" and check["cut_frames"] == 1002
    assert check["equal"], f"max |diff| {check['max_abs_diff']}"


@pytest.mark.parametrize("strategy", ["fsdp", "fsdp2"])
@pytest.mark.parametrize("on_gpu", [False, True])
def test_reference_weights_stay_on_the_gpu_only_when_asked(bare_fsdp_engine, monkeypatch, on_gpu, strategy):
    """Hook R with FSDP's real wrapping (FSDP2: wins1ref): verl's reference engine offloads its weights to the CPU
    unless asked."""
    import torch
    from verl.workers.config import FSDPEngineConfig

    verl_hooks.install()
    if on_gpu:
        monkeypatch.setenv(verl_hooks.REF_ON_GPU_ENV, "1")
    else:
        monkeypatch.delenv(verl_hooks.REF_ON_GPU_ENV, raising=False)
    torch.cuda.set_device(0)
    engine = bare_fsdp_engine("cuda")
    engine.engine_config = FSDPEngineConfig(strategy=strategy, forward_only=True)
    module = engine._build_fsdp_module(engine._build_module())
    if strategy == "fsdp":
        assert bool(module.cpu_offload.offload_params) is not on_gpu
    else:
        assert getattr(engine, "_uses_fsdp2_cpu_offload_policy", False) is not on_gpu  # set only when offloading
    local = [p.to_local() if hasattr(p, "to_local") else p for p in module.parameters()]
    assert {p.device.type for p in local} == ({"cuda"} if on_gpu else {"cpu"})


@pytest.mark.parametrize(("strategy", "lora", "options"), [
    ("fsdp2", False, {"offload_policy": True}),  # grpo_step_bench's wins1: full fine-tuning on one GPU
    ("fsdp", True, {}),  # lora1: the LoRA recipe as shipped, hook T's sync from FSDP1's full state dict
    ("fsdp2", True, {}),  # lora1fsdp2
], ids=["fsdp2-offload-full", "fsdp-lora", "fsdp2-lora"])
def test_verls_engine_runs_and_syncs_qwen2_audio_on_the_gpu(bare_fsdp_engine, fsdp_engine_support, tiny_model_dir,
                                                            strategy, lora, options):
    """verl's FSDPEngine on one GPU as the 7B runs use it: the forward and backward on audio agree with a plain model
    holding the weights the sync sends (under FSDP2 the first forward failed on the H200 until hook S left the
    encoder's position table to the root unit), and with LoRA each adapted weight arrives as W + (alpha / r) B A
    (hook T)."""
    import torch

    support = fsdp_engine_support  # its build, sync and forward check run on any device
    verl_hooks.install()
    torch.cuda.set_device(0)
    engine = bare_fsdp_engine("cuda")
    adapters = support.build(engine, str(tiny_model_dir), strategy, support.LORA if lora else None, **options)
    assert engine._uses_fsdp2_cpu_offload_policy is bool(options.get("offload_policy"))
    sent = {name: t.float().cpu() for name, t in support.sync(engine).items()}
    assert support.forward_gap(engine, sent, str(tiny_model_dir)) < 0.1
    if lora:
        from r1aqa_plugin.models.qwen2_audio.vllm_model import Qwen2AudioWithV5Names

        mapper = Qwen2AudioWithV5Names.hf_to_vllm_mapper
        loaded = {mapper._map_name(name): tensor for name, tensor in sent.items()}
        for name, want in support.merged(adapters, mapper).items():
            torch.testing.assert_close(loaded[name], want.float().cpu(), rtol=2**-7, atol=1e-5, msg=name)


def test_liger_kernels_on_the_language_model_keep_its_logits_and_gradients(bare_fsdp_engine, fsdp_engine_support,
                                                                          tiny_model_dir, monkeypatch):
    """Hook X on the GPU (grpo_step_bench's wins1liger): Liger's RMSNorm, SwiGLU and rotary kernels in Qwen2-Audio's
    decoder give the logits and gradients of transformers' own code, the fp32 weights under verl's bf16 autocast
    as the actor runs them."""
    import torch
    from verl.workers.config import FSDPEngineConfig

    pytest.importorskip("liger_kernel", reason="liger-kernel is the [liger] extra (staged with EXTRA for the GPU)")
    from transformers.models.qwen2 import modeling_qwen2

    for name in ("apply_rotary_pos_emb", "Qwen2RMSNorm", "Qwen2MLP"):  # Liger swaps them for later models too
        monkeypatch.setattr(modeling_qwen2, name, getattr(modeling_qwen2, name))
    verl_hooks.install()
    torch.cuda.set_device(0)
    engine = bare_fsdp_engine("cuda")
    engine.engine_config = FSDPEngineConfig()
    batch = {k: v.cuda() for k, v in fsdp_engine_support.audio_batch(str(tiny_model_dir)).items()}
    got = {}
    for use_liger in (False, True):  # transformers' code first: Liger's swaps reach every Qwen2 built after them
        object.__setattr__(engine.model_config, "use_liger", use_liger)
        module = engine._build_module().cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = module(**batch).logits
        logits.float().pow(2).mean().backward()
        grads = torch.cat([p.grad.float().flatten() for p in verl_hooks.language_model_of(module).parameters()])
        got[use_liger] = (logits.detach().float(), grads)
    (plain, plain_grads), (liger, liger_grads) = got[False], got[True]
    assert modeling_qwen2.apply_rotary_pos_emb.__module__.startswith("liger_kernel")
    assert ((liger - plain).abs().max() / plain.std()).item() < 0.05
    assert ((liger_grads - plain_grads).norm() / plain_grads.norm()).item() < 0.05


@pytest.mark.parametrize("merge", ["0", "1"])
def test_the_audio_merge_backward_waits_for_the_gpu_only_without_hook_y(bare_fsdp_engine, fsdp_engine_support,
                                                                       tiny_model_dir, monkeypatch, merge):
    """Hook Y on the GPU: under torch's sync debug mode "error", transformers' merge fails in backward (its masked
    scatter and boolean select call nonzero(), which waits for the GPU); with the hook the whole backward runs."""
    import torch
    from verl.workers.config import FSDPEngineConfig

    from r1aqa_plugin.models.qwen2_audio.audio_merge import MERGE_ENV

    monkeypatch.setenv(MERGE_ENV, merge)
    verl_hooks.install()
    torch.cuda.set_device(0)
    engine = bare_fsdp_engine("cuda")
    engine.engine_config = FSDPEngineConfig()
    # the first prompt twice: hook I's gather of one clip's encoding into two rows is in the backward too
    batch = {k: torch.cat([v, v[:1]]).cuda() for k, v in fsdp_engine_support.audio_batch(str(tiny_model_dir)).items()}
    module = engine._build_module().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = module(**batch).logits.float().pow(2).mean()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        if merge == "0":
            with pytest.raises(RuntimeError, match="synchroniz"):
                loss.backward()
        else:
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    if merge == "1":
        assert all(p.grad is not None for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("overlap", [False, True])
def test_streamed_optimizer_step_matches_a_plain_step_and_holds_few_chunks_on_the_gpu(overlap):
    """Hook V on CUDA: AdamW by chunks of 8 MB equals one AdamW step over every parameter, the moments end in host
    memory, and the GPU's peak holds one chunk's moments (three with the copies overlapped) instead of all of them."""
    import torch

    from r1aqa_plugin.models.qwen2_audio import streamed_step

    def build():
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(1024, 1024, device="cuda")) for _ in range(16)]  # 4 MB each
        return params, torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)

    (plain, opt_plain), (chunked, opt_chunked) = build(), build()
    peaks, homes = [], []
    for step in range(3):
        for params in (plain, chunked):
            torch.manual_seed(step)
            for p in params:
                p.grad = torch.randn_like(p)
        opt_plain.step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        assert streamed_step.streamed_step(opt_chunked, opt_chunked.step, 8 * 2**20, overlap) == 8
        peaks.append(torch.cuda.max_memory_allocated() - base)
        homes.append([v.data_ptr() for state in opt_chunked.state.values() for v in state.values() if v.dim() > 0])
    assert all(torch.equal(p, q) for p, q in zip(plain, chunked))
    # the pinned host copies made at the first step take every later step's result: no new host buffers
    assert homes[0] == homes[1] == homes[2]
    moments = [v for state in opt_chunked.state.values() for v in state.values() if v.dim() > 0]
    assert len(moments) == 32 and {v.device.type for v in moments} == {"cpu"} and all(v.is_pinned() for v in moments)
    assert all(torch.equal(opt_plain.state[p]["exp_avg_sq"].cpu(), opt_chunked.state[q]["exp_avg_sq"])
               for p, q in zip(plain, chunked))
    # all moments would be 128 MB on the GPU (plus the optimizer's temporaries); a chunk's are 16 MB
    assert max(peaks) < 100 * 2**20, peaks


@pytest.mark.parametrize(("strategy", "overlap"), [("fsdp", "0"), ("fsdp2", "0"), ("fsdp2", "1")])
def test_streamed_optimizer_step_through_verls_engine_on_the_gpu(bare_fsdp_engine, fsdp_engine_support,
                                                                tiny_model_dir, monkeypatch, strategy, overlap):
    """Hook V inside verl's FSDP engine on one GPU (FSDP1's flat parameters, FSDP2's DTensors), with verl's own
    optimizer offload moves around each update: two updates give the weights verl's unstreamed ones give, and the
    AdamW state stays in host memory even while the actor is in train mode. The gradients are set, not computed, so
    that both runs step from the same ones (a backward on the GPU need not be deterministic)."""
    import torch
    from verl.workers.config.optimizer import FSDPOptimizerConfig

    from r1aqa_plugin.models.qwen2_audio import streamed_step

    def moment_addresses(optimizer):  # where each moment's storage is (a DTensor's local shard under FSDP2)
        return [getattr(v, "_local_tensor", v).data_ptr() for state in optimizer.state.values()
                for v in state.values() if torch.is_tensor(v) and v.dim() > 0]

    verl_hooks.install()
    torch.cuda.set_device(0)
    support = fsdp_engine_support
    weights = []
    for stream in ("0", "1"):
        monkeypatch.setenv(streamed_step.STREAM_ENV, stream)
        monkeypatch.setenv(streamed_step.CHUNK_ENV, "0.5")
        monkeypatch.setenv(streamed_step.OVERLAP_ENV, overlap)  # "1": side streams, FSDP2's DTensor moments
        engine = bare_fsdp_engine("cuda")
        support.build(engine, str(tiny_model_dir), strategy, None)
        engine.optimizer_config = FSDPOptimizerConfig(lr=1e-3, clip_grad=1.0)
        engine.optimizer = engine._build_optimizer(engine.module)
        homes = []
        for update in range(2):
            engine.to("cuda", model=False, optimizer=True, grad=False)  # what verl's train mode does on entry
            state_devices = {v.device.type for s in engine.optimizer.state.values() for v in s.values()
                             if torch.is_tensor(v) and v.dim() > 0}
            assert state_devices <= ({"cpu"} if stream == "1" else {"cuda"})
            homes.append(moment_addresses(engine.optimizer))
            for i, p in enumerate(engine.module.parameters()):
                p.grad = torch.sin(p.detach() * (i + 1 + update))  # the same in both runs, pointwise on DTensors too
            engine.optimizer_step()
            engine.to("cpu", model=False, optimizer=True, grad=False)  # and on exit
            engine.optimizer.zero_grad(set_to_none=True)
        if stream == "1":  # the second update wrote into the host copies the first one made
            assert homes[1] and homes[1] == moment_addresses(engine.optimizer)
        weights.append({n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().cpu()
                        for n, p in engine.module.named_parameters()})
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_right_padded_rows_run_sdpas_flash_kernel_only_with_hook_aa(tmp_path):
    """Hook AA on CUDA, with sdpa's cuDNN kernels off as in verl's workers (vLLM's import turns them off): verl's
    padded micro-batch runs the decoder's attention in sdpa's flash kernel instead of the masked memory-efficient one
    (the encoder keeps its mask), with bf16 log-probs within rounding."""
    import json

    from causal_attention_bench import main

    out = tmp_path / "causal.json"
    assert main(["--size", "tiny", "--tokens", "64", "--clip-seconds", "4", "--micro", "16", "--short", "20",
                 "--repeats", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    masked, causal = row["kernels_0"], row["kernels_1"]
    assert masked["causal (flash)"] == 0 and causal["causal (flash)"] > 0, (masked, causal)
    assert causal["masked (memory-efficient)"] < masked["masked (memory-efficient)"], (masked, causal)
    assert row["max_abs_logprob_diff"] < 0.25, row["max_abs_logprob_diff"]


def test_packed_shared_prompts_run_in_bf16_with_verls_log_probs(tmp_path):
    """Hook AB on CUDA (sdpa's cuDNN kernels off, as in verl's workers): a micro-batch of two clips' groups packed
    into one sequence runs sdpa's flash kernels (the prefixes causal, each row's tokens with a lower-right causal bias)
    forward and backward in bf16, with verl's log-probs within bf16 rounding."""
    import json

    from causal_attention_bench import main

    out = tmp_path / "shared.json"
    assert main(["--hook", "shared", "--size", "tiny", "--tokens", "64", "--clip-seconds", "4", "--micro", "16",
                 "--short", "20", "--repeats", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    separate, packed = row["kernels_0"], row["kernels_1"]
    assert packed["causal (flash)"] > 0, (separate, packed)
    assert row["max_abs_logprob_diff"] < 0.25, row["max_abs_logprob_diff"]


def shared_prompt_errors(device: str, size: str = "tiny") -> dict[str, float]:
    """Hook AB against fp32: the relative L2 error of all gradients (summed over the parameters) and the largest
    log-prob error of verl's separate bf16 rows and of the packed bf16 micro-batch, both against verl's fp32 rows (16
    rows over 2 clips, ~20 new tokens as in the learning proof, a loss weighting each token's log-prob at random)."""
    import copy
    import os

    import torch
    from causal_attention_bench import log_probs, ragged_rows, verl_engine, verl_micro_batch
    from encoder_dedup_bench import batch, build

    from r1aqa_plugin.models.qwen2_audio.builder import build_processor
    from r1aqa_plugin.models.qwen2_audio.causal_attention import CAUSAL_ENV
    from r1aqa_plugin.models.qwen2_audio.shared_prompt import SHARED_ENV

    verl_hooks.install()
    fp32 = build(size, device, "fp32")
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    rows, audio = ragged_rows(batch(16, 2, 20, 4.0, device), short=9)
    micro_batch = verl_micro_batch(rows, audio, build_processor().tokenizer.pad_token_id)
    weights = torch.rand(int(micro_batch["input_ids"].offsets()[-1]), generator=torch.Generator().manual_seed(3))

    def run(model: Any, shared: str) -> torch.Tensor:
        os.environ.update({SHARED_ENV: shared, CAUSAL_ENV: "1"})
        model.zero_grad(set_to_none=True)
        values = log_probs(model, verl_engine(model), micro_batch).float()
        (values * weights.to(values.device)).sum().backward()
        return values.detach()

    def grad_rel_error(model: Any) -> float:  # parameter by parameter: a 7B's gradients are not copied
        want = {n: p.grad for n, p in fp32.named_parameters() if p.grad is not None}
        got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert got.keys() == want.keys()
        diff = sum(float((got[n].float() - w).square().sum()) for n, w in want.items())
        return (diff / sum(float(w.square().sum()) for w in want.values())) ** 0.5

    try:
        want_values = run(fp32, "0")
        result = {}
        for name, shared in (("verl", "0"), ("packed", "1")):
            values = run(bf16, shared)
            result[f"{name}_grad_rel_error"] = grad_rel_error(bf16)
            result[f"{name}_max_logprob_error"] = (values - want_values).abs().max().item()
    finally:
        os.environ.pop(SHARED_ENV, None)
        os.environ.pop(CAUSAL_ENV, None)
    print(result)
    return result


def test_packed_bf16_gradients_are_as_close_to_fp32_as_verls():
    """Hook AB in bf16 (sdpa's flash kernels, cuDNN off as in verl's workers) moves the gradients and log-probs no
    further from fp32 than verl's own bf16 rows do: a packing error (a row reading another's tokens, a label off by
    one) would be an error of order 1."""
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)
    errors = shared_prompt_errors("cuda")
    assert errors["verl_grad_rel_error"] < 0.1, errors
    assert errors["packed_grad_rel_error"] < 2 * errors["verl_grad_rel_error"], errors
    assert errors["packed_max_logprob_error"] < 2 * errors["verl_max_logprob_error"] + 0.05, errors
