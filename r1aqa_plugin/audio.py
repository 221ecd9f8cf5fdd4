"""Audio loading in one place: path | bytes | {path|bytes} -> float32 mono at 16 kHz.

Decoding is libsndfile (via soundfile: wav, flac, ogg/vorbis/opus, mp3) and resampling is libsoxr (via soxr,
"HQ"). Qwen2-Audio's Whisper front end takes 30 s at most; what happens to longer clips is an explicit policy.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from r1aqa_plugin.once_cache import OnceCache

SAMPLE_RATE = 16_000
WHISPER_MAX_SECONDS = 30.0

ChannelPolicy = Literal["mean", "first"]
LongPolicy = Literal["truncate", "error", "keep"]


class AudioError(ValueError):
    """An audio item could not be turned into a usable waveform; the message names the item."""


@dataclass(frozen=True)
class AudioInfo:
    """What load_audio did to one clip (for counting and reporting)."""

    source_sr: int
    channels: int
    seconds: float
    truncated: bool


def describe_source(source: Any) -> str:
    """A short human-readable name for an audio item, for error messages."""
    if isinstance(source, dict):
        if source.get("path"):
            return str(source["path"])
        if source.get("bytes") is not None:
            return f"<{len(source['bytes'])} bytes>"
        return f"<dict keys={sorted(source)}>"
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return str(source)


def _open(source: Any) -> Any:
    """A path or in-memory file soundfile can read, from any accepted form of audio item."""
    if isinstance(source, dict):
        data = source.get("bytes")
        source = data if data is not None else source.get("path")
        if source is None:
            raise AudioError("audio item has neither 'path' nor 'bytes'")
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioError("audio bytes are empty")
        return io.BytesIO(bytes(source))
    path = os.fspath(source)
    if not os.path.exists(path):
        raise AudioError(f"audio file not found: {path}")
    return path


def _read(source: Any) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        wav, sr = sf.read(_open(source), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # libsndfile reports corrupt/unknown formats as several exception types
        raise AudioError(f"cannot decode audio ({type(exc).__name__}: {exc})") from exc
    return wav, int(sr)


def audio_seconds(source: Any) -> float:
    """Duration of one audio item from its header, without decoding; AudioError (naming it) if unreadable."""
    import soundfile as sf

    try:
        info = sf.info(_open(source))
    except AudioError as exc:
        raise AudioError(f"{describe_source(source)}: {exc}") from None
    except Exception as exc:
        raise AudioError(f"{describe_source(source)}: cannot read audio header ({exc})") from exc
    if info.frames <= 0:
        raise AudioError(f"{describe_source(source)}: audio has zero samples")
    return info.frames / info.samplerate


def load_audio_with_info(
    source: Any,
    *,
    sample_rate: int = SAMPLE_RATE,
    channels: ChannelPolicy = "mean",
    long_audio: LongPolicy = "truncate",
    max_seconds: float = WHISPER_MAX_SECONDS,
) -> tuple[np.ndarray, AudioInfo]:
    """Decode, downmix and resample one audio item; return the waveform and what was done to it."""
    import soxr

    try:
        wav, sr = _read(source)
        if wav.shape[0] == 0:
            raise AudioError("audio has zero samples")
        if not np.isfinite(wav).all():
            raise AudioError("audio contains NaN or infinite samples")
        if channels == "first":  # R1-AQA keeps channel 0 (torchaudio.load(...)[0])
            mono = wav[:, 0]
        elif channels == "mean":
            mono = wav.mean(axis=1)
        else:
            raise AudioError(f"unknown channel policy {channels!r} (use 'mean' or 'first')")
        if sr != sample_rate:
            mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        seconds = mono.shape[0] / sample_rate
        truncated = False
        if seconds > max_seconds:
            if long_audio == "error":
                raise AudioError(f"audio is {seconds:.1f} s, over the {max_seconds:.0f} s limit")
            if long_audio == "truncate":
                mono = mono[: int(max_seconds * sample_rate)]
                truncated = True
            elif long_audio != "keep":
                raise AudioError(f"unknown long-audio policy {long_audio!r} (use truncate, error or keep)")
    except AudioError as exc:
        raise AudioError(f"{describe_source(source)}: {exc}") from exc.__cause__
    return mono, AudioInfo(source_sr=sr, channels=wav.shape[1], seconds=seconds, truncated=truncated)


def load_audio(source: Any, **kwargs: Any) -> np.ndarray:
    """Decode one audio item (path, bytes, or a ``{path|bytes}`` dict) to float32 mono at 16 kHz."""
    return load_audio_with_info(source, **kwargs)[0]


# The last distinct clips decoded in this process (a 30 s clip is 1.9 MB): verl's agent loop decodes a prompt's
# audio once per sample, the n samples of a GRPO group in parallel threads.
DECODE_CACHE_CLIPS = 64
_decoded: OnceCache[np.ndarray] = OnceCache(DECODE_CACHE_CLIPS)


def _source_key(source: Any) -> tuple | None:
    """What identifies an item's content: a digest of its bytes, or a path with its size and mtime."""
    if isinstance(source, dict):
        data = source.get("bytes")
        source = data if data is not None else source.get("path")
    if isinstance(source, (bytes, bytearray)):
        return ("bytes", hashlib.blake2b(source, digest_size=16).digest())
    if isinstance(source, (str, os.PathLike)):
        try:
            st = os.stat(source)
        except OSError:
            return None  # load_audio names the missing file
        return ("path", os.path.abspath(source), st.st_size, st.st_mtime_ns)
    return None


def load_audio_cached(source: Any, **kwargs: Any) -> np.ndarray:
    """``load_audio`` through a per-process cache of recent clips (a fresh copy each call; errors are not cached)."""
    key = _source_key(source)
    if key is None:
        return load_audio(source, **kwargs)
    return _decoded.get((key, tuple(sorted(kwargs.items()))), lambda: load_audio(source, **kwargs)).copy()


def encode_wav(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode a float waveform as 16-bit PCM wav bytes (what the parquet stores for generated audio)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
