"""The Qwen2-Audio processor verl can call twice.

verl's agent loop re-runs the processor after rollout on ``tokenizer.decode(ids, skip_special_tokens=True)``
to rebuild the actor's multimodal inputs. ``<|AUDIO|>`` is a special token, so that text has no placeholder
left and the stock ``Qwen2AudioProcessor`` refuses it ("Found 0 <|AUDIO|> token ... received 1 audio"). The
actor only needs the audio features from that call (verl drops its input_ids), so this subclass answers a
placeholder-free text with the features alone. Any other mismatch still raises, as the stock processor does.

Both calls run once per SAMPLE (verl repeats each prompt n times before the agent loop), so the Whisper features
are computed once per distinct clip and reused; the prompt call then expands ``<|AUDIO|>`` by the stock rule
(tested equal to the stock processor's output).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
from transformers import BatchFeature, Qwen2AudioProcessor

from r1aqa_plugin.models.qwen2_audio import feature_window
from r1aqa_plugin.once_cache import OnceCache

# Diagnostic only: R1AQA_DIAG_ACTOR_AUDIO makes the actor hear other audio than vLLM did, so the rollout-vs-actor
# log-prob gap must grow (tests/test_gpu_grpo.py). "other": the last different clip this process saw (another
# sample's audio, cut or zero-padded to this clip's length so the <|AUDIO|> count still matches); "reverse": the
# clip time-reversed.
DIAG_ENV = "R1AQA_DIAG_ACTOR_AUDIO"
DIAG_MODES = ("other", "reverse")
# Features of the last distinct clips (a 30 s window of 128 mel bins is 1.5 MB; 64 clips cover 4 steps' prompts).
# verl runs processor calls in executor threads, a GRPO group's n samples at the same moment, so a plain cache
# misses n times at once (the seventh GPU session's stack samples: the agent loop's threads busy extracting
# features); OnceCache makes those concurrent misses one extraction.
FEATURE_CACHE_CLIPS = 64
_feature_cache: OnceCache[tuple[np.ndarray, np.ndarray]] = OnceCache(FEATURE_CACHE_CLIPS)
_recent_clips: list[np.ndarray] = []  # the last two distinct clips this process saw, newest first


def diagnostic_audio(clip: np.ndarray, mode: str) -> np.ndarray:
    """The clip the actor gets under the R1AQA_DIAG_ACTOR_AUDIO diagnostic ``mode``."""
    if mode not in DIAG_MODES:
        raise ValueError(f"{DIAG_ENV}={mode!r}: expected one of {', '.join(DIAG_MODES)}")
    if mode == "reverse":
        return np.ascontiguousarray(clip[::-1])
    other = next((c for c in _recent_clips if not np.array_equal(c, clip)), None)
    if not _recent_clips or not np.array_equal(_recent_clips[0], clip):
        _recent_clips[:] = [np.array(clip, copy=True), *_recent_clips[:1]]
    if other is None:  # the first clip this process sees: nothing else to give yet
        return np.ascontiguousarray(clip[::-1])
    out = np.zeros_like(clip)
    n = min(len(clip), len(other))
    out[:n] = other[:n]
    return out


class VerlQwen2AudioProcessor(Qwen2AudioProcessor):
    """Qwen2AudioProcessor whose call with audio but no ``<|AUDIO|>`` in the text returns features only."""

    @classmethod
    def wrap(cls, processor: Qwen2AudioProcessor) -> VerlQwen2AudioProcessor:
        """Build this class from a loaded Qwen2AudioProcessor (same extractor, tokenizer and template)."""
        return cls(feature_extractor=processor.feature_extractor, tokenizer=processor.tokenizer,
                   chat_template=processor.chat_template, audio_token=processor.audio_token,
                   audio_bos_token=processor.audio_bos_token, audio_eos_token=processor.audio_eos_token)

    def __call__(self, text: Any = None, audio: Any = None, **kwargs: Any) -> BatchFeature:
        # verl passes images=/videos= (None) to every processor; they mean nothing here.
        if kwargs.pop("images", None) is not None or kwargs.pop("videos", None) is not None:
            raise ValueError("Qwen2-Audio takes no images or videos")
        if audio is not None and text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            placeholders = sum(t.count(self.audio_token) for t in texts)
            if placeholders == 0:
                return self.audio_features(audio, **kwargs)
            out = self._prompt_with_cached_features(texts, placeholders, audio, **kwargs)
            if out is not None:
                return out
        return super().__call__(text=text, audio=audio, **kwargs)

    def _prompt_with_cached_features(self, texts: list[str], placeholders: int, audio: Any,
                                     sampling_rate: int | None = None, return_tensors: str | None = None,
                                     **other: Any) -> BatchFeature | None:
        """The stock call's output with each clip's features from the per-clip cache; None where the call is not
        the plain one verl makes (other keyword arguments, non-1-D clips, a placeholder/clip count mismatch), which
        then goes to the stock processor, errors included."""
        audios = [audio] if isinstance(audio, np.ndarray) else list(audio)
        if other or placeholders != len(audios) or not all(isinstance(a, np.ndarray) and a.ndim == 1 for a in audios):
            return None
        feats = self._stacked_features(audios, sampling_rate)
        expanded = self.expand_audio_tokens(texts, [int(m.sum()) for m in feats["feature_attention_mask"]])
        return BatchFeature(data={**super().__call__(text=expanded), **feats}, tensor_type=return_tensors)

    def expand_audio_tokens(self, texts: list[str], frames: list[int]) -> list[str]:
        """Each ``<|AUDIO|>`` repeated once per encoder output frame of its clip (``frames``: valid mel frames per
        clip, in order), wrapped in bos/eos unless already next to one: the stock Qwen2AudioProcessor's rule."""
        frames = list(frames)
        out = []
        for sample in texts:
            pieces = []
            while self.audio_token in sample:
                input_length = (frames.pop(0) - 1) // 2 + 1
                piece = self.audio_token * ((input_length - 2) // 2 + 1)
                start = sample.find(self.audio_token)
                end = start + len(self.audio_token)
                has_bos = sample[start - len(self.audio_bos_token): start] == self.audio_bos_token
                has_eos = sample[end: end + len(self.audio_eos_token)] == self.audio_eos_token
                if not has_bos and not has_eos:
                    piece = self.audio_bos_token + piece + self.audio_eos_token
                pieces.append(piece)
                sample = sample.replace(self.audio_token, "<placeholder>", 1)
            while "<placeholder>" in sample:
                sample = sample.replace("<placeholder>", pieces.pop(0), 1)
            out.append(sample)
        return out

    def audio_features(self, audio: Any, sampling_rate: int | None = None, return_tensors: str | None = None,
                       **_: Any) -> BatchFeature:
        """Whisper features as ``__call__`` computes them, with the frame mask; cut after the clips' last frames
        (hook P, ``feature_window``: the model's forward pads them back to 30 s) unless R1AQA_TRIM_FEATURES=0."""
        audios = [audio] if isinstance(audio, np.ndarray) else list(audio)
        if os.environ.get(DIAG_ENV):
            audios = [diagnostic_audio(np.asarray(a), os.environ[DIAG_ENV]) for a in audios]
        data = self._stacked_features([np.asarray(a) for a in audios], sampling_rate)
        if feature_window.trim_enabled():
            data["input_features"], data["feature_attention_mask"] = feature_window.trim(
                data["input_features"], data["feature_attention_mask"])
        from r1aqa_plugin.models.qwen2_audio.verl_hooks import _trace

        _trace("actor audio features", f"input_features {np.shape(data['input_features'])}, "
               f"{int(np.sum(data['feature_attention_mask']))} valid frames")
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _stacked_features(self, audios: list[np.ndarray], sampling_rate: int | None) -> dict[str, np.ndarray]:
        """``input_features`` and ``feature_attention_mask`` of the clips, one row each, from the per-clip cache."""
        rate = sampling_rate or self.feature_extractor.sampling_rate
        pairs = [self._clip_features(a, rate) for a in audios]
        return {"input_features": np.stack([f for f, _ in pairs]),
                "feature_attention_mask": np.stack([m for _, m in pairs])}

    def _clip_features(self, clip: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """One clip's features and frame mask, computed once per distinct clip in this process.

        verl repeats each prompt n times before the agent loop and rebuilds every sample's features after its
        rollout: the 8 samples of a GRPO group carry the same clip, so 7 of 8 extractions are repeats.
        """
        fe = self.feature_extractor
        key = (hashlib.blake2b(np.ascontiguousarray(clip).view(np.uint8), digest_size=16).digest(), clip.dtype.str,
               clip.shape, rate, fe.feature_size, fe.n_samples, fe.hop_length)

        def extract() -> tuple[np.ndarray, np.ndarray]:
            feats = fe([clip], sampling_rate=rate, return_attention_mask=True, padding="max_length")
            return np.asarray(feats["input_features"][0]), np.asarray(feats["attention_mask"][0])

        return _feature_cache.get(key, extract)


# Saved configs name the processor class by ``__class__.__name__`` (processor_config.json, tokenizer_config.json);
# verl saves the processor with every checkpoint, and AutoProcessor must load those as the stock class.
VerlQwen2AudioProcessor.__name__ = VerlQwen2AudioProcessor.__qualname__ = "Qwen2AudioProcessor"
