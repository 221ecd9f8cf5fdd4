"""Hook AB: rows of a GRPO group share one forward pass of their prompt, and every row's log-probs, entropies and the
gradients stay those of verl's separate rows."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from r1aqa_plugin.models.qwen2_audio import shared_prompt, verl_hooks
from r1aqa_plugin.models.qwen2_audio.causal_attention import CAUSAL_ENV
from r1aqa_plugin.models.qwen2_audio.shared_prompt import SHARED_ENV

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from causal_attention_bench import verl_engine, verl_micro_batch  # noqa: E402  (verl's padded path)

TEXT = "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n{q}<|im_end|>\n<|im_start|>assistant\n"
AUDIO = 7  # a stand-in audio token id for the planning tests


def _t(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def _clip(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_features": torch.randn(1, 4, 10, generator=g), "feature_attention_mask": torch.ones(1, 10)}


# ---------------------------------------------------------------------------------------------------- planning
def test_rows_with_the_same_audio_and_prompt_share_its_prefix():
    prompt = list(range(20, 40)) + [AUDIO] * 4 + [50, 51]
    rows = [_t(prompt + [60, 61, 62]), _t(prompt + [70]), _t(prompt + [60, 61, 80, 81]), _t([90] * 30)]
    clip = _clip(0)
    layout = shared_prompt.plan(rows, [clip, clip, {k: v.clone() for k, v in clip.items()}, None], AUDIO)
    assert layout is not None and len(layout.groups) == 2
    shared, alone = layout.groups
    assert shared.rows == (0, 1, 2) and shared.prefix == len(prompt) and shared.suffix == 4
    assert alone.rows == (3,) and alone.start == shared.end and alone.prefix == 30 and alone.suffix == 0
    assert layout.length == len(prompt) + 3 * 4 + 30


def test_a_prefix_may_run_into_the_responses_but_every_row_keeps_a_token():
    prompt = list(range(20, 40))
    rows = [_t(prompt + [60, 61, 62]), _t(prompt + [60, 61, 62]), _t(prompt + [60, 61, 63, 64])]
    layout = shared_prompt.plan(rows, [None] * 3, AUDIO)
    (group,) = layout.groups
    assert group.prefix == len(prompt) + 2  # identical rows: each keeps its last token
    assert group.suffix == 2


@pytest.mark.parametrize("case", ["different audio", "short prefix", "audio after the prefix"])
def test_rows_that_do_not_share_stay_apart(case):
    prompt = list(range(20, 40)) + [AUDIO] * 3
    audio = [_clip(0), _clip(0)]
    if case == "different audio":
        rows, audio = [_t(prompt + [60]), _t(prompt + [61])], [_clip(0), _clip(1)]
    elif case == "short prefix":
        rows = [_t(prompt[:3] + [AUDIO, 60]), _t(prompt[:3] + [AUDIO, 61])]
    else:
        rows = [_t(prompt[:-3] + [60, AUDIO, AUDIO]), _t(prompt[:-3] + [61, AUDIO, AUDIO])]
    assert shared_prompt.plan(rows, audio, AUDIO) is None


def test_packed_ids_positions_and_where_each_row_reads_its_logits():
    prompt = list(range(20, 40))
    rows = [_t(prompt + [60, 61]), _t(prompt + [70]), _t([90] * 17)]
    layout = shared_prompt.plan(rows, [None] * 3, AUDIO)
    ids, positions, source = shared_prompt.packed_inputs(rows, layout, pad_token_id=0)
    assert ids[0].tolist() == prompt + [60, 61, 70, 0] + [90] * 17
    assert positions[0].tolist() == list(range(20)) + [20, 21, 20, 21] + list(range(17))
    flat = torch.cat(rows)
    assert torch.equal(ids[0][source], flat)  # every position of every row reads a packed position of its token
    own = shared_prompt.own_label_positions(rows, layout)
    assert own.tolist() == [19, 21, 22 + 19, 22 + 20, 43 + 16]


# ------------------------------------------------------------------- through verl's engine, on the tiny checkpoint
def _micro_batch(processor, groups: list[tuple[str, list[int]]]):
    """verl's micro-batch: per group one clip and prompt, rows of prompt + own random response lengths."""
    rng = np.random.default_rng(5)
    rows, audio = [], []
    for q, answers in groups:
        clip = (0.2 * rng.standard_normal(16000 * 2)).astype(np.float32)
        enc = processor(text=[TEXT.format(q=q)], audio=[clip], sampling_rate=16000, return_tensors="pt")
        inputs = {"input_features": enc["input_features"], "feature_attention_mask": enc["feature_attention_mask"]}
        for n_answer in answers:
            rows.append(torch.cat([enc["input_ids"][0], torch.from_numpy(rng.integers(100, 1000, n_answer))]))
            audio.append(inputs)  # verl's rows of one prompt hold its processor outputs
    return verl_micro_batch(rows, audio, processor.tokenizer.pad_token_id)


def _pass(model, engine, micro_batch, monkeypatch, shared: bool, entropy: bool = True):
    monkeypatch.setenv(SHARED_ENV, "1" if shared else "0")
    monkeypatch.setenv(CAUSAL_ENV, "1")
    from verl.utils import tensordict_utils as tu

    tu.assign_non_tensor(micro_batch, calculate_entropy=entropy)
    model.zero_grad()
    inputs, output_args = engine.prepare_model_inputs(micro_batch)
    output = model(**inputs, use_cache=False)
    out = engine.prepare_model_outputs(output, output_args, micro_batch, None)
    (out["log_probs"].values().sum() + (out["entropy"].values().sum() if entropy else 0)).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    monkeypatch.undo()
    return inputs, {k: v.values().detach() for k, v in out.items()}, grads


def test_packed_pass_gives_verls_log_probs_entropies_and_gradients(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    verl_hooks.install()
    engine = verl_engine(model)
    engine.engine_config = types.SimpleNamespace(entropy_checkpointing=False)
    micro_batch = _micro_batch(processor, [("Which sound?", [7, 3, 11]), ("What is the loudest sound?", [5, 5]),
                                           ("Why?", [4])])
    verl_inputs, want, want_grads = _pass(model, engine, micro_batch, monkeypatch, shared=False)
    inputs, got, grads = _pass(model, engine, micro_batch, monkeypatch, shared=True)

    layout = inputs["attention_mask"]["full_attention"]
    assert isinstance(layout, shared_prompt.PackedLayout)
    assert [len(g.rows) for g in layout.groups] == [3, 2, 1]
    assert inputs["input_ids"].shape == (1, layout.length) and inputs["input_features"].shape[0] == 3
    assert layout.length < int(micro_batch["input_ids"].offsets()[-1])
    assert verl_inputs["attention_mask"] is None  # the control ran hook AA's unmasked rows
    assert got.keys() == want.keys() == {"log_probs", "entropy"}
    for key in want:  # every position of every row, including each row's last (verl's wrapped label)
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=2e-5, msg=key)
    assert grads.keys() == want_grads.keys() and any("audio_tower" in n for n in grads)
    for name, grad in grads.items():  # summed in another order: equal to fp32 rounding of the largest entry
        scale = want_grads[name].abs().max().clamp(min=1e-12)
        assert ((grad - want_grads[name]).abs().max() / scale).item() < 1e-5, name


def test_a_micro_batch_without_shared_prompts_keeps_verls_inputs(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    verl_hooks.install()
    engine = verl_engine(model)
    monkeypatch.setenv(SHARED_ENV, "1")
    inputs, output_args = engine.prepare_model_inputs(_micro_batch(processor, [("Which?", [3]), ("Why?", [4])]))
    assert shared_prompt.OUTPUT_KEY not in output_args and not isinstance(inputs["attention_mask"], dict)


def test_unsupported_settings_keep_verls_inputs_and_are_logged(model_and_processor, monkeypatch, caplog):
    model, processor = model_and_processor
    verl_hooks.install()
    monkeypatch.setenv(SHARED_ENV, "1")
    monkeypatch.setitem(shared_prompt._refusals, "count", 0)
    from verl.utils import tensordict_utils as tu

    micro_batch = _micro_batch(processor, [("Which sound?", [3, 4])])
    tu.assign_non_tensor(micro_batch, use_fused_kernels=True)
    with caplog.at_level(logging.WARNING, logger="r1aqa.adapter"):
        assert shared_prompt.pack_micro_batch(micro_batch, model.config.audio_token_id, "sdpa") is None
        tu.assign_non_tensor(micro_batch, use_fused_kernels=False)
        assert shared_prompt.pack_micro_batch(micro_batch, model.config.audio_token_id, "eager") is None
    assert shared_prompt.refusals() == 2
    assert sum("hook AB" in r.message and "use_fused_kernels" in r.message for r in caplog.records) == 1
    assert shared_prompt.pack_micro_batch(micro_batch, model.config.audio_token_id, "sdpa") is not None


def test_other_attention_masks_reach_transformers_sdpa():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    verl_hooks.install()
    assert getattr(ALL_ATTENTION_FUNCTIONS["sdpa"], "__r1aqa_patched__", False)
    q = torch.randn(1, 2, 5, 4)
    module = torch.nn.Module()
    module.is_causal = True
    out, _ = ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, q, q, None)
    want = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).transpose(1, 2)
    torch.testing.assert_close(out, want)
