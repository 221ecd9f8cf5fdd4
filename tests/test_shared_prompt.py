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
def assert_same_gradients(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """The same parameters got gradients, the audio tower's among them, each equal to fp32 rounding of its largest
    entry (the packed pass sums the rows' contributions in another order)."""
    assert got.keys() == want.keys() and any("audio_tower" in n for n in want)
    for name, grad in want.items():
        scale = grad.abs().max().clamp(min=1e-12)
        assert ((got[name] - grad).abs().max() / scale).item() < 1e-5, name


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
    assert_same_gradients(grads, want_grads)


def _grpo_batch(processor, questions: list[str], n: int, seed: int = 7):
    """A rollout batch as verl's trainer holds it before the actor's passes: ``n`` samples per prompt (rows of a group
    next to each other, sharing their prompt's processor outputs), prompts left-padded, responses right-padded."""
    from verl import DataProto

    rng = np.random.default_rng(seed)
    pad = processor.tokenizer.pad_token_id
    prompts, responses, audio = [], [], []
    for q in questions:
        clip = (0.2 * rng.standard_normal(16000 * 2)).astype(np.float32)
        enc = processor(text=[TEXT.format(q=q)], audio=[clip], sampling_rate=16000, return_tensors="pt")
        inputs = {"input_features": enc["input_features"], "feature_attention_mask": enc["feature_attention_mask"]}
        for _ in range(n):
            prompts.append(enc["input_ids"][0])
            responses.append(torch.from_numpy(rng.integers(100, 1000, int(rng.integers(2, 12)))))
            audio.append(inputs)
    width_p, width_r = max(map(len, prompts)), max(map(len, responses))
    rows, masks, response_masks = [], [], []
    for p, r in zip(prompts, responses):
        rows.append(torch.cat([torch.full((width_p - len(p),), pad), p, r, torch.full((width_r - len(r),), pad)]))
        masks.append(torch.cat([torch.zeros(width_p - len(p)), torch.ones(len(p) + len(r)),
                                torch.zeros(width_r - len(r))]).long())
        response_masks.append(masks[-1][width_p:])
    input_ids, attention_mask = torch.stack(rows), torch.stack(masks)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    rows_n = len(rows)
    scores = torch.from_numpy(rng.standard_normal(rows_n)).float()
    response_mask = torch.stack(response_masks)
    tensors = {"prompts": input_ids[:, :width_p], "responses": input_ids[:, width_p:], "input_ids": input_ids,
               "attention_mask": attention_mask, "position_ids": position_ids, "response_mask": response_mask,
               "advantages": scores[:, None] * response_mask}
    return DataProto.from_dict(tensors=tensors, non_tensors={"multi_modal_inputs": np.array(audio, dtype=object)},
                               meta_info={"temperature": 1.0})


LR = 1e-3  # large enough that the tiny model's step shows


def _actor_config():
    """The recipe's actor config as verl's worker builds it (``ActorConfig``: the loss settings ppo_loss reads)."""
    from hydra import compose, initialize_config_module
    from verl.utils.config import omega_conf_to_dataclass

    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=["+recipe=r1aqa_grpo", "data.train_files=t.parquet",
                                                "data.val_files=v.parquet", "actor_rollout_ref.model.path=m"])
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def test_verls_actor_passes_give_the_same_log_probs_loss_and_weights_with_hook_ab(
        bare_fsdp_engine, fsdp_engine_support, tiny_model_dir, model_and_processor, monkeypatch):
    """verl's actor as its trainer drives it, on its FSDP2 engine (one CPU rank, fp32): the old-log-prob pass, then
    one update (the recipe's loss: ppo_loss with the k3 KL term, seq-mean-token-mean; micro-batches of 4; AdamW and
    gradient clipping) on 2 prompts x 8 samples with audio. Hook AB on packs each micro-batch's rows (one group's);
    off, verl's own rows. The log-probs and entropies, the loss and its metrics, and the gradients agree to fp32
    rounding; the updated weights to a small part of one step."""
    from functools import partial

    from verl.utils import tensordict_utils as tu
    from verl.workers.config.optimizer import FSDPOptimizerConfig
    from verl.workers.engine.fsdp import transformer_impl
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

    _, processor = model_and_processor
    verl_hooks.install()
    monkeypatch.setenv(CAUSAL_ENV, "1")
    fsdp_engine_support.steer_to_cpu(monkeypatch.setattr)
    monkeypatch.setattr(transformer_impl, "get_device_name", lambda: "cpu")  # forward_step's loss-less placeholder
    actor_config = _actor_config()
    assert actor_config.use_kl_loss and actor_config.loss_agg_mode == "seq-mean-token-mean"
    loss_fn = partial(ppo_loss, config=actor_config)
    questions = ["Which sound is it?", "What is the loudest sound in this clip?"]
    packed = []
    real_pack = shared_prompt.pack_micro_batch
    monkeypatch.setattr(shared_prompt, "pack_micro_batch", lambda *a: packed.append(real_pack(*a)) or packed[-1])

    def td(batch, **flags):  # the trainer's DataProto -> verl's no-padding TensorDict, with a pass's flags
        data = left_right_2_no_padding(batch.to_tensordict())
        tu.assign_non_tensor(data, use_remove_padding=False, use_dynamic_bsz=False, micro_batch_size_per_gpu=4,
                             use_fused_kernels=False, **flags)
        return data

    def actor(shared: bool) -> tuple[torch.Tensor, dict, dict, dict]:
        """The old log-probs and entropies, the update's metrics, the gradients it stepped on, the new weights."""
        monkeypatch.setenv(SHARED_ENV, "1" if shared else "0")
        engine = bare_fsdp_engine()
        engine.__class__ = FSDPEngineWithLMHead  # the actor's engine: the language-model head and its forward_step
        engine.ulysses_device_mesh, engine.pad_to_length = None, False
        fsdp_engine_support.build(engine, str(tiny_model_dir), "fsdp2", None,  # fp32 compute: equal to rounding
                                  mixed_precision={"param_dtype": "fp32", "reduce_dtype": "fp32"})
        engine.optimizer_config = FSDPOptimizerConfig(lr=LR, clip_grad=1.0, weight_decay=0.0)
        engine.optimizer = engine._build_optimizer(engine.module)
        grads = {}
        step = engine.optimizer.step

        def snapshot_and_step(*args, **kwargs):
            grads.update({n: p.grad.full_tensor().clone() for n, p in engine.module.named_parameters()
                          if p.grad is not None})
            return step(*args, **kwargs)

        engine.optimizer.step = snapshot_and_step
        # the old-log-prob pass (forward only), as _compute_old_log_prob asks it
        batch = _grpo_batch(processor, questions, n=8)
        data = td(batch, calculate_entropy=True, compute_loss=False)
        engine.module.eval()
        out = engine.infer_batch(data)
        old = no_padding_2_padding(out["model_output"]["log_probs"], data).float()
        entropy = no_padding_2_padding(out["model_output"]["entropy"], data).float()
        # the update: old log-probs as the ratio's base, the reference a little off (the KL term has a gradient)
        ref = old - 0.05 * torch.linspace(-1, 1, old.shape[-1])
        batch = batch.union(type(batch).from_dict(tensors={"old_log_probs": old, "ref_log_prob": ref}))
        data = td(batch, calculate_entropy=False, global_batch_size=len(batch))
        engine.module.train()
        before = {name: p.full_tensor().detach().clone() for name, p in engine.module.named_parameters()}
        out = engine.train_batch(data, loss_function=loss_fn)
        weights = {name: p.full_tensor().detach().clone() for name, p in engine.module.named_parameters()}
        metrics = {key: torch.tensor([float(v.aggregate() if hasattr(v, "aggregate") else v)
                                      for v in (value if isinstance(value, list) else [value])], dtype=torch.float64)
                   for key, value in out["metrics"].items()}  # verl's Metric objects: their aggregated values
        metrics["loss per micro-batch"] = torch.tensor(out["loss"], dtype=torch.float64)
        assert sum(not torch.equal(weights[n], before[n]) for n in weights) > len(weights) // 2  # it stepped
        return torch.stack([old, entropy]), metrics, grads, weights

    want_passes, want_metrics, want_grads, want_weights = actor(shared=False)
    assert not packed
    got_passes, got_metrics, got_grads, got_weights = actor(shared=True)
    assert len(packed) == 8 and all(p is not None for p in packed)  # 4 log-prob + 4 update micro-batches packed
    torch.testing.assert_close(got_passes, want_passes, rtol=0, atol=2e-5)  # the old log-probs and entropies
    assert got_metrics.keys() == want_metrics.keys()
    for key, value in want_metrics.items():
        torch.testing.assert_close(got_metrics[key], value, rtol=1e-4, atol=1e-6, msg=key)
    assert_same_gradients(got_grads, want_grads)  # what verl's step took (accumulated over 4 micro-batches, clipped)
    for name, weight in want_weights.items():
        # AdamW's first step moves each weight by ~lr * sign(grad): an entry whose gradient is rounding noise may move
        # a little differently, so the weights agree to a small part of one step, not to rounding
        torch.testing.assert_close(got_weights[name], weight, rtol=0, atol=0.05 * LR, msg=name)


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
