"""The Qwen2-Audio adapter against the real installed verl 0.9.1 (and transformers), on CPU."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
import torch

from r1aqa_plugin.models.qwen2_audio import verl_hooks
from r1aqa_plugin.models.qwen2_audio.names import AUDIO_BOS_ID, AUDIO_EOS_ID, AUDIO_TOKEN_ID
from r1aqa_plugin.models.qwen2_audio.shared_prompt import SHARED_ENV

pytestmark = pytest.mark.integration


def _messages(text: str = "What is it?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "audio", "audio": None}, {"type": "text", "text": text}]}]


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from verl.utils import hf_processor

    return hf_processor(str(tiny_model_dir))


def test_every_patch_target_exists_in_the_installed_verl():
    import importlib

    verl_hooks.install()
    for patch in verl_hooks.status():
        module = importlib.import_module(patch.module)
        owner, attr = verl_hooks._resolve(module, patch.attr)
        assert hasattr(owner, attr), f"{patch.module}.{patch.attr}"
        assert patch.state == "applied", (patch.module, patch.attr, patch.detail)


def test_install_is_idempotent():
    import verl.utils.tokenizer.tokenizer as tok_mod

    before = tok_mod.hf_processor
    verl_hooks.install()
    verl_hooks.install()
    assert tok_mod.hf_processor is before
    assert getattr(before, "__r1aqa_patched__", False)
    # the wrapper wraps verl's function exactly once
    assert before.__closure__ is not None


def test_an_untested_verl_version_raises_a_clear_error(monkeypatch):
    monkeypatch.setattr(verl_hooks, "TESTED_VERL", ("0.0.1",))
    monkeypatch.delenv(verl_hooks.ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(verl_hooks.AdapterError, match=r"verl 0\.9\.1 is installed.*0\.0\.1"):
        verl_hooks.install()


@pytest.mark.parametrize(("installed", "accepted"), [("0.28.0+cpu", True), ("0.24.0", True), ("0.24.0+cu130", True),
                                                     ("0.25.0", False), ("0.28.1+cpu", False)])
def test_vllm_versions_are_checked_by_release_not_build_label(monkeypatch, installed, accepted):
    monkeypatch.setattr(verl_hooks, "installed_vllm_version", lambda: installed)
    problems = [p for p in verl_hooks.check_versions() if p.startswith("vLLM")]
    assert problems == ([] if accepted else [f"vLLM {installed} is installed; tested: 0.24.0, 0.28.0"])


def test_a_missing_patch_target_raises_naming_it(monkeypatch):
    import types

    fake = types.ModuleType("fake_target")
    patch = verl_hooks.Patch("X", "fake_target", "gone", lambda f: f, "test")
    with pytest.raises(verl_hooks.AdapterError, match="fake_target.gone does not exist"):
        verl_hooks._apply(patch, fake)
    assert patch.state == "error"


def test_hf_processor_returns_the_wrapped_qwen2_audio_processor(processor):
    from r1aqa_plugin.models.qwen2_audio.processor import VerlQwen2AudioProcessor

    assert isinstance(processor, VerlQwen2AudioProcessor)
    assert processor.feature_extractor.sampling_rate == 16000


def test_processor_rerun_on_decoded_text_returns_the_same_features(processor):
    """verl's post-rollout call decodes with skip_special_tokens, which strips <|AUDIO|>."""
    wave = _tone(3.0)
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    full = processor(text=[text], audio=[wave], sampling_rate=16000, return_tensors="np")
    decoded = processor.tokenizer.decode(full["input_ids"][0], skip_special_tokens=True)
    assert "<|AUDIO|>" not in decoded
    again = processor(text=[decoded], audio=[wave], sampling_rate=16000, return_tensors="np")
    assert set(again) == {"input_features", "feature_attention_mask"}
    # hook P: the same features, cut 2 frames after the clip's 300 (the model's forward pads them back)
    assert again["input_features"].shape[-1] == 302 and full["feature_attention_mask"].sum() == 300
    np.testing.assert_array_equal(again["input_features"], full["input_features"][..., :302])
    np.testing.assert_array_equal(again["feature_attention_mask"], full["feature_attention_mask"][..., :302])


def test_diagnostic_other_audio_gives_the_actor_another_samples_clip(monkeypatch):
    from r1aqa_plugin.models.qwen2_audio import processor as proc

    monkeypatch.setattr(proc, "_recent_clips", [])
    a, b, c = _tone(1.0), np.linspace(-1, 1, 12000, dtype=np.float32), np.full(20000, 0.5, np.float32)
    np.testing.assert_array_equal(proc.diagnostic_audio(a, "other"), a[::-1])  # nothing else seen yet
    np.testing.assert_array_equal(proc.diagnostic_audio(b, "other")[:12000], a[:12000])  # cut to b's length
    for _ in range(3):  # the rest of b's group still gets a, not b
        np.testing.assert_array_equal(proc.diagnostic_audio(b, "other"), a[:12000])
    out = proc.diagnostic_audio(c, "other")  # zero-padded to c's length: same <|AUDIO|> count
    assert len(out) == len(c) and np.array_equal(out[:12000], b) and not out[12000:].any()
    np.testing.assert_array_equal(proc.diagnostic_audio(a, "reverse"), a[::-1])
    with pytest.raises(ValueError, match="R1AQA_DIAG_ACTOR_AUDIO='swap'"):
        proc.diagnostic_audio(a, "swap")


def test_processor_features_follow_the_diagnostic(processor, monkeypatch):
    from r1aqa_plugin.models.qwen2_audio import processor as proc

    wave = _tone(3.0)
    plain = processor(text=["no placeholder"], audio=[wave], sampling_rate=16000, return_tensors="np")
    monkeypatch.setenv(proc.DIAG_ENV, "reverse")
    rev = processor(text=["no placeholder"], audio=[wave], sampling_rate=16000, return_tensors="np")
    np.testing.assert_array_equal(rev["feature_attention_mask"], plain["feature_attention_mask"])
    assert not np.allclose(rev["input_features"], plain["input_features"])


def test_post_rollout_features_are_computed_once_per_distinct_clip(processor, monkeypatch):
    """A GRPO group's samples share their clip: only the first of them runs the feature extractor."""
    from r1aqa_plugin.models.qwen2_audio import processor as proc

    monkeypatch.setattr(proc, "_feature_cache", proc.OnceCache(2))
    calls = []
    extractor = type(processor.feature_extractor)
    original = extractor.__call__
    monkeypatch.setattr(extractor, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    waves = [_tone(3.0), _tone(2.0), 0.5 * _tone(3.0)]
    fresh = [original(processor.feature_extractor, [w], sampling_rate=16000, return_attention_mask=True,
                      padding="max_length") for w in waves]
    for _ in range(8):
        out = processor(text=["no placeholder"], audio=[waves[0]], sampling_rate=16000, return_tensors="np")
        np.testing.assert_array_equal(out["input_features"], fresh[0]["input_features"][..., :302])
        np.testing.assert_array_equal(out["feature_attention_mask"], fresh[0]["attention_mask"][..., :302])
    assert len(calls) == 1  # eight processor calls, one extraction
    both = processor(text=["x"], audio=[waves[1], waves[2]], sampling_rate=16000, return_tensors="np")
    np.testing.assert_array_equal(both["input_features"][1], fresh[2]["input_features"][0, :, :302])
    assert len(calls) == 3 and len(proc._feature_cache) == 2  # bounded: the first clip was evicted
    processor(text=["x"], audio=[waves[0]], sampling_rate=16000)
    assert len(calls) == 4


@pytest.mark.parametrize("seconds", [[0.3], [3.0], [10.0], [29.99], [30.0], [41.5], [2.0, 7.25]])
@pytest.mark.parametrize("template", ["chat", "bare", "bos_only"])
def test_prompt_call_with_cached_features_equals_the_stock_processor(processor, seconds, template):
    """The prompt call (text with <|AUDIO|>) reuses per-clip features and expands like the stock processor."""
    from transformers import Qwen2AudioProcessor

    waves = [_tone(s) * (1 + i) for i, s in enumerate(seconds)]
    if template == "chat":
        texts = [processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)]
        if len(waves) == 2:
            texts = [texts[0].replace("<|audio_eos|>", "<|audio_eos|>Audio 2: <|audio_bos|><|AUDIO|><|audio_eos|>")]
    elif template == "bare":  # no bos/eos around the placeholder: the rule adds them
        texts = ["first " + " then ".join(["<|AUDIO|>"] * len(waves)) + " end"]
    else:
        texts = [" ".join(["<|audio_bos|><|AUDIO|>"] * len(waves)), "no audio here"]
    stock = Qwen2AudioProcessor.__call__
    ragged = len(texts) > 1  # texts of different lengths make tensors only with padding: lists then
    for tensors in (None,) if ragged else ("np", "pt", None):
        for _ in range(2):  # the second call is served from the feature cache
            ours = processor(text=texts, audio=waves, sampling_rate=16000, return_tensors=tensors)
            ref = stock(processor, text=texts, audio=waves, sampling_rate=16000, return_tensors=tensors)
            assert list(ours) == list(ref)
            for key in ref:
                assert type(ours[key]) is type(ref[key]), key
                for a, b in zip(ours[key], ref[key]) if isinstance(ref[key], list) else [(ours[key], ref[key])]:
                    a, b = np.asarray(a), np.asarray(b)
                    assert a.dtype == b.dtype, key
                    np.testing.assert_array_equal(a, b, err_msg=key)


def test_prompt_calls_extract_features_once_per_distinct_clip(processor, monkeypatch):
    from r1aqa_plugin.models.qwen2_audio import processor as proc

    monkeypatch.setattr(proc, "_feature_cache", proc.OnceCache(proc.FEATURE_CACHE_CLIPS))
    calls = []
    extractor = type(processor.feature_extractor)
    original = extractor.__call__
    monkeypatch.setattr(extractor, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    wave = _tone(4.0)
    for _ in range(8):  # a GRPO group: the same prompt and clip, n times
        processor(text=[text], audio=[wave], sampling_rate=16000, return_tensors="pt")
    decoded = processor.tokenizer.decode(processor(text=[text], audio=[wave])["input_ids"][0],
                                         skip_special_tokens=True)
    processor(text=[decoded], audio=[wave], sampling_rate=16000)  # the post-rollout call shares the cache
    assert len(calls) == 1
    processor(text=[text], audio=[wave], sampling_rate=16000, padding="longest")  # not the plain call: stock path
    assert len(calls) == 2


def test_processor_still_rejects_a_real_placeholder_mismatch(processor):
    with pytest.raises(ValueError, match="Found 2"):
        processor(text=["<|AUDIO|> <|AUDIO|>"], audio=[_tone(1.0)], sampling_rate=16000)


def test_continuous_token_builder_for_qwen2_audio_is_multimodal_and_matches_hf(processor):
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    builder = create_continuous_token_builder(processor.tokenizer, hf_model_type="qwen2_audio", processor=processor)
    assert builder.supports_multimodal()
    assert type(builder).__name__ == "QwenVLContinuousTokenBuilder"
    wave = _tone(3.0)
    ids = builder.build_initial_tokens(_messages(), audios=[wave])
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    expected = processor(text=[text], audio=[wave], sampling_rate=16000)["input_ids"][0]
    assert list(ids) == list(expected)
    assert list(ids).count(AUDIO_TOKEN_ID) == 75


def test_placeholder_collapse_round_trips_through_vllms_expansion_rule(processor):
    """Collapsed prompt + vLLM's PromptReplacement (one <|AUDIO|> -> N) equals HF's expansion."""
    from verl.workers.rollout.vllm_rollout import vllm_async_server as server

    for seconds in (0.7, 3.0, 10.0, 30.0):
        wave = _tone(seconds)
        text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
        hf_ids = list(processor(text=[text], audio=[wave], sampling_rate=16000)["input_ids"][0])
        collapsed = server.qwen2_5_vl_dedup_image_tokens(hf_ids, processor)
        assert collapsed.count(AUDIO_TOKEN_ID) == 1
        n = hf_ids.count(AUDIO_TOKEN_ID)
        i = collapsed.index(AUDIO_TOKEN_ID)
        assert collapsed[i - 1] == AUDIO_BOS_ID and collapsed[i + 1] == AUDIO_EOS_ID
        expanded = collapsed[:i] + [AUDIO_TOKEN_ID] * n + collapsed[i + 1 :]
        assert expanded == hf_ids


def test_audio_tokens_are_banned_from_sampling(processor):
    from verl.workers.rollout.vllm_rollout import vllm_async_server as server

    banned = server.get_vision_placeholder_token_ids(processor)
    assert {AUDIO_TOKEN_ID, AUDIO_BOS_ID, AUDIO_EOS_ID} <= set(banned)


def test_other_processors_are_left_alone():
    from verl.workers.rollout.vllm_rollout import vllm_async_server as server

    ids = [1, AUDIO_TOKEN_ID, AUDIO_TOKEN_ID, 2]
    assert server.qwen2_5_vl_dedup_image_tokens(ids, None) == ids
    assert server.get_vision_placeholder_token_ids(None) == []


def test_actor_model_class_resolves_to_qwen2_audio(tiny_model_dir):
    from transformers import AutoConfig
    from verl.utils.model import get_hf_auto_model_class

    cls = get_hf_auto_model_class(AutoConfig.from_pretrained(tiny_model_dir))
    assert cls.__name__ == "AutoModelForMultimodalLM"
    model_cls = cls._model_mapping[type(AutoConfig.from_pretrained(tiny_model_dir))]
    assert model_cls.__name__ == "Qwen2AudioForConditionalGeneration"


def test_vllm_worker_check_raises_for_the_stock_model_class():
    class Qwen2AudioForConditionalGeneration:  # what vLLM loads when the plugin did not run
        pass

    with pytest.raises(verl_hooks.AdapterError, match="vllm.general_plugins"):
        verl_hooks.check_vllm_model(Qwen2AudioForConditionalGeneration())


def test_a_saved_wrapped_processor_loads_back_as_the_stock_class(processor, tmp_path):
    """verl saves the processor into every checkpoint; `r1aqa eval` and vLLM load it with AutoProcessor."""
    from transformers import AutoProcessor, Qwen2AudioProcessor

    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is Qwen2AudioProcessor
    assert loaded.chat_template == processor.chat_template


def test_hf_model_checkpoint_export_builds_qwen2_audio(tiny_model_dir, tmp_path):
    """verl's FSDP checkpoint manager: get_auto_model_for_vision2seq().from_config(...) then save_pretrained."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForMultimodalLM
    from verl.utils.checkpoint import fsdp_checkpoint_manager as ckpt

    config = AutoConfig.from_pretrained(tiny_model_dir)
    with init_empty_weights():
        empty = ckpt.get_auto_model_for_vision2seq().from_config(config, torch_dtype=torch.bfloat16)
    assert type(empty).__name__ == "Qwen2AudioForConditionalGeneration"
    empty.to_empty(device="cpu")
    state = AutoModelForMultimodalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).state_dict()
    empty.save_pretrained(tmp_path, state_dict=state)
    reloaded = AutoModelForMultimodalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).state_dict()
    assert all(torch.equal(reloaded[k], state[k]) for k in state)


def test_vllm_mapper_takes_original_v5_and_save_pretrained_names(tiny_model_dir):
    pytest.importorskip("vllm")
    from safetensors import safe_open

    from r1aqa_plugin.models.qwen2_audio.names import SAVE_PRETRAINED_BUG, V5_TO_ORIGINAL
    from r1aqa_plugin.models.qwen2_audio.vllm_model import Qwen2AudioWithV5Names

    mapper = Qwen2AudioWithV5Names.hf_to_vllm_mapper
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        original = list(f.keys())
    for name in original:
        assert mapper._map_name(name) == name
        for new, old in V5_TO_ORIGINAL:
            if name.startswith(old):
                assert mapper._map_name(new + name[len(old):]) == name
        if name.startswith(SAVE_PRETRAINED_BUG[1]):
            buggy = SAVE_PRETRAINED_BUG[0] + name[len(SAVE_PRETRAINED_BUG[1]):]
            assert mapper._map_name(buggy) == name


def test_group_rows_by_prompt_keeps_each_ranks_rows_and_makes_prompts_adjacent():
    keys = ["a_0_0", "b_0_0", "a_1_0", "c_0_0", "b_1_0", "c_1_0", "pad9_0_0", "a_2_0"]
    order = verl_hooks.group_rows_by_prompt(keys, 2)
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:]) == [4, 5, 6, 7]
    assert [keys[i].split("_")[0] for i in order] == ["a", "a", "b", "c", "b", "c", "pad9", "a"]
    assert [keys[i] for i in verl_hooks.group_rows_by_prompt(keys, 1)][:3] == ["a_0_0", "a_1_0", "a_2_0"]
    with pytest.raises(verl_hooks.AdapterError, match="8 rows do not split into 3"):
        verl_hooks.group_rows_by_prompt(keys, 3)


def _balance(processor, monkeypatch, group: str, shared: str = "0", dp: int = 2):
    """verl's real v1 _balance_batch (patched by hook J) on 4 prompts x 4 samples in arrival order, ``dp`` ranks:
    the keys in the order handed out, and the balance metrics."""
    import types

    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    monkeypatch.setenv(verl_hooks.GROUP_ENV, group)
    monkeypatch.setenv(SHARED_ENV, shared)
    rng = np.random.default_rng(0)
    keys = [f"uid{p}_{s}_0" for s, p in sorted(((s, p) for p in range(4) for s in range(4)),
                                                 key=lambda _: rng.random())]
    batch = KVBatchMeta(keys=keys, tags=[{"seq_len": int(rng.integers(300, 600))} for _ in keys], partition_id="train")
    trainer = types.SimpleNamespace(processor=processor, tokenizer=processor.tokenizer,
                                    actor_rollout_wg=types.SimpleNamespace(_dispatch_info={"actor": list(range(dp))}),
                                    _get_required_batch_multiple=lambda dp: dp)
    metrics: dict = {}
    out = PPOTrainer._balance_batch(trainer, batch, metrics)
    return out.keys, {key: tag["seq_len"] for key, tag in zip(out.keys, out.tags)}, metrics


def _adjacent(uids: list[str]) -> bool:
    """Whether each value's occurrences are next to each other."""
    return all(uids[uids.index(u):uids.index(u) + uids.count(u)] == [u] * uids.count(u) for u in set(uids))


def test_v1_balance_batch_groups_a_prompts_samples_on_each_rank(processor, monkeypatch):
    """Hook AB off: verl's length balance decides the rows per rank; hook J keeps them and makes prompts adjacent."""
    plain, _, _ = _balance(processor, monkeypatch, "0")
    grouped, _, _ = _balance(processor, monkeypatch, "1")
    for rank in (slice(0, 8), slice(8, 16)):
        assert sorted(plain[rank]) == sorted(grouped[rank])
        assert _adjacent([k.split("_")[0] for k in grouped[rank]]), grouped[rank]
    assert plain != grouped  # arrival order interleaves prompts; grouping changed it


def test_with_shared_prompts_each_rank_gets_whole_prompts_balanced_by_workload(processor, monkeypatch):
    """Hook AB on, 2 ranks: verl's row balance split prompts over both ranks (no rank could share them); hook J
    hands each rank two whole prompts, adjacent, picked by verl's workload, and logs that balance."""
    from verl.utils.seqlen_balancing import calculate_workload

    plain, _, _ = _balance(processor, monkeypatch, "0", shared="1")
    keys, seq_len, metrics = _balance(processor, monkeypatch, "1", shared="1")
    ranks = [keys[:8], keys[8:]]
    uids = [{k.split("_")[0] for k in rank} for rank in ranks]
    assert len(uids[0]) == len(uids[1]) == 2 and not uids[0] & uids[1]
    assert all(_adjacent([k.split("_")[0] for k in rank]) for rank in ranks)
    assert any(len({k.split("_")[0] for k in plain[r]}) > 2 for r in (slice(0, 8), slice(8, 16)))  # verl's split them
    load = {uid: sum(int(calculate_workload(torch.tensor(seq_len[k]))) for k in keys if k.startswith(uid + "_"))
            for uid in {k.split("_")[0] for k in keys}}
    best = min(abs(sum(load[u] for u in pair) * 2 - sum(load.values())) for pair in itertools.combinations(load, 2))
    assert abs(sum(load[u] for u in uids[0]) * 2 - sum(load.values())) == best  # the most even split of 4 prompts
    rank_tokens = [sum(seq_len[k] for k in rank) for rank in ranks]
    assert metrics["global_seqlen/max"] == max(rank_tokens) and metrics["global_seqlen/min"] == min(rank_tokens)


def test_whole_prompts_per_rank_refuses_what_does_not_divide():
    keys = ["a_0_0", "b_0_0", "a_1_0", "b_1_0", "c_0_0", "c_1_0"]
    order, why = verl_hooks.whole_prompts_per_rank(keys, [300] * 6, 2)
    assert order == [] and "3 prompts do not split evenly over 2" in why
    order, why = verl_hooks.whole_prompts_per_rank(keys + ["pad9_0_0"], [300] * 7, 1)
    assert order == [] and "different numbers of rows" in why
    order, why = verl_hooks.whole_prompts_per_rank(keys, [300, 300, 300, 300, 900, 900], 3)
    chunks = [[keys[i].split("_")[0] for i in order[r:r + 2]] for r in (0, 2, 4)]
    assert why == "" and sorted(chunks) == [["a", "a"], ["b", "b"], ["c", "c"]]  # one whole prompt a rank


# ----------------------------------------------------------------------------------- hook K: frozen audio tower
def test_freeze_request_passes_actor_freeze_vision_tower_to_the_engine_build():
    from omegaconf import OmegaConf
    from verl.single_controller.base.decorator import MAGIC_ATTR
    from verl.workers.engine_workers import ActorRolloutRefWorker

    verl_hooks.install()
    patched = ActorRolloutRefWorker.init_model
    # the worker group binds init_model by verl's @register attributes: the wrapper must keep them
    assert getattr(patched, "__r1aqa_patched__", False)
    assert getattr(patched, MAGIC_ATTR) == getattr(patched.__wrapped__, MAGIC_ATTR)
    seen = []
    init_model = verl_hooks._make_freeze_request(lambda self: seen.append(verl_hooks._freeze_audio_tower.get()))
    for actor in ({"freeze_vision_tower": True}, {"freeze_vision_tower": False}, {}):
        init_model(type("W", (), {"config": OmegaConf.create({"actor": actor})})())
    assert seen == [True, False, False] and verl_hooks._freeze_audio_tower.get() is False  # reset after the build


def test_engine_build_freezes_the_audio_tower_of_the_actor_only(bare_fsdp_engine):
    """verl's real FSDPEngine._build_module (patched by hook K) on the tiny checkpoint: with the flag, the actor's
    audio encoder has no trainable parameter and everything else still trains; the reference and a run without the
    flag are untouched."""
    from verl.workers.config import FSDPEngineConfig

    from r1aqa_plugin.models.qwen2_audio.whisper_init import audio_tower_of

    verl_hooks.install()
    engine = bare_fsdp_engine()
    trainable = {}
    for flag, forward_only in ((True, False), (False, False), (True, True)):
        engine.engine_config = FSDPEngineConfig(forward_only=forward_only, use_orig_params=True)
        token = verl_hooks._freeze_audio_tower.set(flag)
        try:
            module = engine._build_module()
        finally:
            verl_hooks._freeze_audio_tower.reset(token)
        tower = {id(p) for p in audio_tower_of(module).parameters()}
        trainable[flag, forward_only] = (any(p.requires_grad for p in audio_tower_of(module).parameters()),
                                         all(p.requires_grad for p in module.parameters() if id(p) not in tower))
    # FSDP1 without use_orig_params cannot wrap frozen and trained parameters together: say so before it fails
    for strategy, orig, fails in (("fsdp", False, True), ("fsdp2", False, False)):
        engine.engine_config = FSDPEngineConfig(strategy=strategy, use_orig_params=orig)
        token = verl_hooks._freeze_audio_tower.set(True)
        try:
            if fails:
                with pytest.raises(verl_hooks.AdapterError, match="fsdp_config.use_orig_params=true"):
                    engine._build_module()
            else:
                engine._build_module()
        finally:
            verl_hooks._freeze_audio_tower.reset(token)
    assert trainable == {(True, False): (False, True), (False, False): (True, True), (True, True): (True, True)}


@pytest.mark.parametrize("strategy", ["fsdp", "fsdp2"])
def test_reference_keeps_its_weights_on_the_gpu_only_when_asked(bare_fsdp_engine, monkeypatch, capsys, strategy):
    """Hook R on verl's real FSDPEngine._build_fsdp_module (FSDP's wrapping itself needs CUDA, so the wrappers it
    calls record their offload argument instead): the forward-only engine is CPU-offloaded as verl does it unless
    R1AQA_REF_ON_GPU=1; the actor never is, and the config reads forward_only again afterwards."""
    from verl.workers.config import FSDPEngineConfig
    from verl.workers.engine.fsdp import transformer_impl

    verl_hooks.install()
    offload = []
    monkeypatch.setattr(transformer_impl, "FSDP", lambda module, **kw: offload.append(kw["cpu_offload"]) or module)
    monkeypatch.setattr(transformer_impl, "apply_fsdp2", lambda module, kw, cfg: offload.append(kw["offload_policy"]))
    monkeypatch.setattr(transformer_impl, "fsdp2_load_full_state_dict", lambda *a, **k: None)
    monkeypatch.setattr(transformer_impl, "get_device_id", lambda: 0)

    engine = bare_fsdp_engine()
    engine.engine_config = FSDPEngineConfig(strategy=strategy)
    module = engine._build_module()
    monkeypatch.setattr(verl_hooks, "_traced", {})
    capsys.readouterr()
    seen = {}
    for env, forward_only in ((None, True), ("1", True), ("0", True), ("1", False)):
        if env is None:
            monkeypatch.delenv(verl_hooks.REF_ON_GPU_ENV, raising=False)
        else:
            monkeypatch.setenv(verl_hooks.REF_ON_GPU_ENV, env)
        engine.engine_config = FSDPEngineConfig(strategy=strategy, forward_only=forward_only)
        engine._build_fsdp_module(module)
        seen[env, forward_only] = offload.pop() is not None
        assert engine.engine_config.forward_only is forward_only
    assert seen == {(None, True): True, ("1", True): False, ("0", True): True, ("1", False): False}
    # verl's workers log at WARN: the line must reach stdout, where Ray forwards it to the run's log, once
    assert capsys.readouterr().out.count("hook R: the reference keeps its weights on the GPU") == 1


def test_reference_hook_fails_loudly_when_verl_changes_where_it_offloads():
    def _build_fsdp_module(self, module):  # a verl that offloads the reference somewhere else
        return module

    with pytest.raises(verl_hooks.AdapterError, match="hook R: .*_build_fsdp_module changed"):
        verl_hooks._make_resident_reference(_build_fsdp_module)


def test_root_lora_merge_hook_fails_loudly_when_verl_stops_skipping_the_root():
    # hook Q at work: tests/test_recipes.py's weight-sync test (FSDP2 with the LoRA recipe)
    def fsdp_merge_unmerge(module, do_merge):  # a verl that merges every unit, the root's included
        return None

    with pytest.raises(verl_hooks.AdapterError, match="hook Q: .*fsdp_merge_unmerge changed"):
        verl_hooks._make_root_lora_merge(fsdp_merge_unmerge)


def test_trainable_kept_hook_fails_loudly_when_verl_disables_adapters_another_way():
    # hook U at work: tests/test_recipes.py's weight-sync tests run the LoRA reference pass first (FSDP2 failed there)
    def disable_adapter(self):  # a verl that switches the adapters off itself
        return self.module.disable_adapter_layers()

    with pytest.raises(verl_hooks.AdapterError, match="hook U: .*disable_adapter changed"):
        verl_hooks._make_trainable_kept(disable_adapter)


def test_fsdp2_wrap_targets_come_deepest_first_only_when_nested():
    # hook S at work on two ranks: tests/test_recipes.py (verl's FSDP2 engine, tests/support/cpu_fsdp_engine.py)
    from torch import nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Linear(2, 2)

    model = nn.Module()
    model.encoder, model.decoder = nn.ModuleList([Layer(), Layer()]), nn.ModuleList([Layer()])
    picked = [model.encoder[0], model.encoder[0].attn, model.encoder[1], model.encoder[1].attn, model.decoder[0]]
    select = verl_hooks._make_bottom_up_wrap(lambda m, classes: list(picked))
    ordered = select(model, ["Layer", "Linear"])
    assert ordered == [model.encoder[0].attn, model.encoder[1].attn, model.encoder[0], model.encoder[1],
                       model.decoder[0]]  # children before their layer; ties keep verl's order
    flat = [model.encoder[0], model.encoder[1], model.decoder[0]]
    assert verl_hooks._make_bottom_up_wrap(lambda m, classes: list(flat))(model, ["Layer"]) == flat


def test_fsdp2_wrap_targets_leave_the_audio_position_table_to_its_parent(tiny_model_dir):
    # the forward that failed without it: tests/test_recipes.py, test_weight_sync_sends_names_... (fsdp2)
    from transformers import AutoConfig, Qwen2AudioForConditionalGeneration
    from verl.utils import fsdp_utils

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False  # as hook L sets it from text_config
    model = Qwen2AudioForConditionalGeneration(config)
    classes = list(model._no_split_modules)
    verls = getattr(fsdp_utils._select_fsdp2_wrap_targets, "__wrapped__", fsdp_utils._select_fsdp2_wrap_targets)
    verl_picks = verls(model, classes)
    picked = verl_hooks._make_bottom_up_wrap(verls)(model, classes)
    table = model.model.audio_tower.embed_positions
    assert any(m is table for m in verl_picks) and not any(m is table for m in picked)
    assert {id(m) for m in picked} == {id(m) for m in verl_picks} - {id(table)}
    assert any(m is model.model.language_model.embed_tokens for m in picked) and any(m is model.lm_head for m in picked)


# ------------------------------------------------------------------------- hook L: tie_word_embeddings at the top
def test_model_config_gets_tie_word_embeddings_from_text_config(tiny_model_dir):
    from transformers import AutoConfig
    from verl.workers.config import HFModelConfig

    verl_hooks.install()
    raw = AutoConfig.from_pretrained(tiny_model_dir)
    assert not hasattr(raw, "tie_word_embeddings") and raw.text_config.tie_word_embeddings is False  # transformers 5
    config = HFModelConfig(path=str(tiny_model_dir), override_config={"attn_implementation": "sdpa"})
    assert config.hf_config.tie_word_embeddings is False and config.share_embeddings_and_output_weights is False
    # the user's override wins
    forced = HFModelConfig(path=str(tiny_model_dir), override_config={"attn_implementation": "sdpa",
                                                                       "tie_word_embeddings": True})
    assert forced.hf_config.tie_word_embeddings is True


def test_token_logprobs_replace_verls_per_row_loop_only_where_verl_would_loop(monkeypatch):
    import torch
    import verl.utils.torch_functional as tf
    import verl.workers.engine.fsdp.transformer_impl as engine

    verl_hooks.install()
    wrapper = engine.logprobs_from_logits
    assert getattr(wrapper, "__r1aqa_patched__", False) and tf.logprobs_from_logits is wrapper
    logits = (3 * torch.randn(40, 300, generator=torch.Generator().manual_seed(0))).bfloat16()
    labels = torch.randint(0, 300, (40,))
    loop = tf.logprobs_from_logits_v2(logits, labels)  # verl's fallback: bf16 out, one log-softmax per row
    assert not tf.FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE  # no flash-attn here: verl itself would loop
    ours = wrapper(logits, labels)
    assert ours.dtype == torch.float32 and loop.dtype == torch.bfloat16
    torch.testing.assert_close(ours, loop.float(), rtol=2**-7, atol=1e-3)  # verl rounds its output to bf16
    monkeypatch.setenv("R1AQA_CHUNKED_LOGPROBS", "0")  # off: verl's own function
    assert wrapper(logits, labels).dtype == torch.bfloat16
    monkeypatch.delenv("R1AQA_CHUNKED_LOGPROBS")
    monkeypatch.setattr(tf, "NPU_CROSS_ENTROPY_LOSS_AVAILABLE", True)  # verl has a kernel: left to verl
    monkeypatch.setattr(tf, "logprobs_from_logits_torch_npu", lambda lg, lb: "npu kernel")
    assert wrapper(logits, labels) == "npu kernel"


def test_token_logprobs_hook_fails_loudly_when_verl_drops_its_kernel_flags(monkeypatch):
    import verl.utils.torch_functional as tf

    monkeypatch.delattr(tf, "FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE")
    with pytest.raises(verl_hooks.AdapterError, match="hook M: verl.utils.torch_functional.FLAH_ATTN"):
        verl_hooks._make_token_logprobs(lambda *a, **k: None)


def test_a_groups_concurrent_processor_calls_extract_features_once(processor, monkeypatch):
    """verl's agent loop calls the processor for a GRPO group's n samples in parallel threads."""
    import threading
    import time

    from r1aqa_plugin.models.qwen2_audio import processor as proc

    monkeypatch.setattr(proc, "_feature_cache", proc.OnceCache(proc.FEATURE_CACHE_CLIPS))
    calls = []
    extractor = type(processor.feature_extractor)
    original = extractor.__call__

    def slow(self, *a, **k):  # long enough that all eight threads miss together
        calls.append(1)
        time.sleep(0.2)
        return original(self, *a, **k)

    monkeypatch.setattr(extractor, "__call__", slow)
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    wave = _tone(4.0)
    barrier, outs = threading.Barrier(8), []

    def sample() -> None:
        barrier.wait()
        outs.append(processor(text=[text], audio=[wave], sampling_rate=16000, return_tensors="np"))

    threads = [threading.Thread(target=sample) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(outs) == 8
    for out in outs[1:]:
        np.testing.assert_array_equal(out["input_features"], outs[0]["input_features"])


@pytest.mark.parametrize("env, given, expected", [(None, None, 0.2), ("0.05", None, 0.05), (None, 1.5, 1.5)])
def test_replay_buffer_polls_every_fifth_of_a_second_unless_told(monkeypatch, env, given, expected):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    verl_hooks.install()
    if env is None:
        monkeypatch.delenv(verl_hooks.POLL_ENV, raising=False)
    else:
        monkeypatch.setenv(verl_hooks.POLL_ENV, env)
    kwargs = {} if given is None else {"poll_interval": given}
    buffer = ReplayBuffer(trainer_mode="sync", trainer_config=OmegaConf.create({}), max_off_policy_threshold=None,
                          max_off_policy_strategy="drop", sampler_kwargs=OmegaConf.create({}), **kwargs)
    assert buffer.poll_interval == expected


def _score_worker(processor, sent: list):
    """verl's real AgentLoopWorker with only what its reward call reads (no Ray, no servers)."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    class Handle:  # a reward-loop worker handle: compute_score.remote(data) is awaited
        class compute_score:  # noqa: N801
            @staticmethod
            def remote(data):
                sent.append(data)
                future = asyncio.get_running_loop().create_future()
                future.set_result({"reward_score": 1.0, "reward_extra_info": {}})
                return future

    worker = object.__new__(AgentLoopWorker)
    worker.processor, worker.tokenizer = processor, processor.tokenizer
    worker.reward_loop_worker_handles, worker.mm_processor_kwargs = [Handle], None
    return worker


@pytest.mark.parametrize("enabled", [True, False])
def test_reward_call_gets_position_ids_without_rerunning_the_processor(processor, monkeypatch, enabled):
    """Hook O: verl's reward call reran the processor (features included) per sample only for position ids."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput

    from r1aqa_plugin.models.qwen2_audio.processor import VerlQwen2AudioProcessor

    verl_hooks.install()
    monkeypatch.setenv(verl_hooks.SCORE_FEATURES_ENV, "1" if enabled else "0")
    wave = _tone(3.0)
    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    prompt_ids = processor(text=[text], audio=[wave], sampling_rate=16000, return_tensors="np")["input_ids"][0].tolist()
    response_ids = processor.tokenizer.encode("<answer>A</answer><|im_end|>", add_special_tokens=False)
    output = AgentLoopOutput(prompt_ids=prompt_ids, response_ids=response_ids, response_mask=[1] * len(response_ids),
                             multi_modal_data={"audios": [wave]}, num_turns=2, metrics=AgentLoopMetrics())
    calls = []
    original = VerlQwen2AudioProcessor.__call__
    monkeypatch.setattr(VerlQwen2AudioProcessor, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    sent: list = []
    worker = _score_worker(processor, sent)
    asyncio.run(worker._compute_score([output], kwargs={"data_source": "x"}))
    assert output.reward_score == 1.0 and len(sent) == 1
    n = len(prompt_ids) + len(response_ids)
    assert sent[0].batch["position_ids"].tolist() == [list(range(n))]  # what verl computes with the features too
    assert len(calls) == (0 if enabled else 1)
    # outside the reward call (the actor's inputs) the processor still runs and returns the features
    import torch

    inputs = worker._compute_multi_modal_inputs(output, torch.tensor([prompt_ids + response_ids]))
    assert inputs["input_features"].shape[0] == 1 and len(calls) == (1 if enabled else 2)


def test_reward_call_hook_fails_loudly_when_verls_reward_call_changes(monkeypatch):
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    verl_hooks._check_score_source(AgentLoopWorker)  # the installed verl: as the hook expects
    monkeypatch.setitem(verl_hooks._SCORE_SOURCE_FACTS, "_compute_position_ids", ("get_rope_index_v2(",))
    with pytest.raises(verl_hooks.AdapterError, match=r"hook O: .*_compute_position_ids changed \('get_rope_index_v2"):
        verl_hooks._check_score_source(AgentLoopWorker)


# Liger's qwen2 patch swaps these module globals of transformers' Qwen2 for its own (in every later model of the
# process); the tests put them back
_LIGER_QWEN2_GLOBALS = ("apply_rotary_pos_emb", "Qwen2RMSNorm", "Qwen2MLP")


def test_use_liger_puts_ligers_kernels_on_the_language_model_through_verls_engine(bare_fsdp_engine, monkeypatch,
                                                                                  capsys):
    """Hook X on verl's real FSDPEngine._build_module: with ``model.use_liger`` verl calls Liger on the whole model,
    which knows no qwen2_audio; every decoder layer of the Qwen2 inside now runs Liger's RMSNorm and SwiGLU and the
    rotary embedding is Liger's, while the audio encoder keeps transformers' code. Without the flag nothing moves.
    (Liger's kernels need a GPU to run: tests/test_gpu_hooks.py compares the outputs.)"""
    pytest.importorskip("liger_kernel", reason="liger-kernel is the [liger] extra, which CI installs")
    from liger_kernel.transformers.rms_norm import LigerRMSNorm
    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from liger_kernel.transformers.swiglu import LigerSwiGLUMLP
    from transformers.models.qwen2 import modeling_qwen2
    from verl.workers.config import FSDPEngineConfig

    from r1aqa_plugin.models.qwen2_audio.whisper_init import audio_tower_of

    for name in _LIGER_QWEN2_GLOBALS:
        monkeypatch.setattr(modeling_qwen2, name, getattr(modeling_qwen2, name))
    verl_hooks.install()
    engine = bare_fsdp_engine()
    engine.engine_config = FSDPEngineConfig()

    def liger_forwards(module) -> dict[str, int]:
        bound = [m.__dict__["forward"].__func__ for m in module.modules() if "forward" in m.__dict__]
        return {"rms_norm": sum(f is LigerRMSNorm.forward for f in bound),
                "swiglu": sum(f is LigerSwiGLUMLP.forward for f in bound), "any": len(bound)}

    plain = engine._build_module()  # first: Liger's class swaps would reach every Qwen2 built after it
    assert liger_forwards(plain)["any"] == 0 and modeling_qwen2.apply_rotary_pos_emb is not liger_rotary_pos_emb
    object.__setattr__(engine.model_config, "use_liger", True)  # verl's configs refuse plain setattr
    module = engine._build_module()
    layers = len(verl_hooks.language_model_of(module).layers)
    assert liger_forwards(verl_hooks.language_model_of(module)) == {
        "rms_norm": 2 * layers + 1, "swiglu": layers, "any": 3 * layers + 1}  # two norms a layer and the last one
    assert liger_forwards(audio_tower_of(module))["any"] == 0 and liger_forwards(module)["any"] == 3 * layers + 1
    assert modeling_qwen2.apply_rotary_pos_emb is liger_rotary_pos_emb
    assert "hook X: Liger's kernels on Qwen2-Audio's Qwen2Model" in capsys.readouterr().out


def test_liger_hook_leaves_other_models_to_liger_itself():
    """Hook X only redirects qwen2_audio: any other model reaches Liger's own dispatch with verl's arguments."""
    seen = []
    patched = verl_hooks._make_liger_for_language_model(lambda model, **kw: seen.append((model, kw)))
    other = type("M", (), {"config": type("C", (), {"model_type": "qwen2"})()})()
    patched(model=other, fused_linear_cross_entropy=False, swiglu=True)
    assert seen == [(other, {"fused_linear_cross_entropy": False, "swiglu": True})]
    with pytest.raises(verl_hooks.AdapterError, match="no language model in M"):
        patched(model=type("M", (), {"config": type("C", (), {"model_type": "qwen2_audio"})()})())


def test_doctor_skips_an_optional_hook_whose_package_is_absent_and_fails_any_other(monkeypatch):
    """``r1aqa doctor``: a hook on an optional package that is not installed (Liger, for hook X) is a skip, not a
    failure; a required target that cannot be imported still fails the check."""
    from r1aqa_plugin.models.qwen2_audio import doctor

    def table(optional: str) -> list:
        return [verl_hooks.Patch("X", "r1aqa_no_such_package.monkey_patch", "f", lambda f: f, "what",
                                 optional=optional)]

    monkeypatch.setattr(verl_hooks, "status", lambda: table("no-such-package (only for a flag)"))
    lines, healthy = doctor.diagnose()
    row = next(line for line in lines if "r1aqa_no_such_package" in line)
    assert row.startswith("  [skip]") and "not installed: no-such-package (only for a flag)" in row
    monkeypatch.setattr(verl_hooks, "status", lambda: table(""))
    lines, healthy = doctor.diagnose()
    row = next(line for line in lines if "r1aqa_no_such_package" in line)
    assert row.startswith("  [FAIL]") and "cannot import r1aqa_no_such_package.monkey_patch" in row and not healthy
