"""Putting sounds on a fixed-length 16 kHz canvas: tones with soft edges, placement, a faint noise floor."""

from __future__ import annotations

import numpy as np

from r1aqa_plugin.audio import SAMPLE_RATE

FADE_SECONDS = 0.01  # raised-cosine edges: a hard onset is a click, an audible cue of its own
NOISE_RMS = 0.002  # a faint floor so that "silence" is not digital zero (real clips never are)


def canvas(seconds: float) -> np.ndarray:
    """An all-zero clip of ``seconds`` at 16 kHz."""
    return np.zeros(int(round(seconds * SAMPLE_RATE)), dtype=np.float32)


def fade(segment: np.ndarray, seconds: float = FADE_SECONDS) -> np.ndarray:
    """Raised-cosine fade-in and fade-out (in place; returns the segment)."""
    n = min(int(seconds * SAMPLE_RATE), len(segment) // 2)
    if n > 0:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))).astype(np.float32)
        segment[:n] *= ramp
        segment[-n:] *= ramp[::-1]
    return segment


def tone(freq: float, seconds: float, amplitude: float) -> np.ndarray:
    """A sine tone with soft edges."""
    t = np.arange(int(round(seconds * SAMPLE_RATE)), dtype=np.float64) / SAMPLE_RATE
    return fade((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32))


def place(clip: np.ndarray, segment: np.ndarray, start_seconds: float) -> None:
    """Add ``segment`` into ``clip`` at ``start_seconds`` (cut at the clip's end)."""
    start = int(round(start_seconds * SAMPLE_RATE))
    end = min(len(clip), start + len(segment))
    if end > start:
        clip[start:end] += segment[: end - start]


def layout(
    rng: np.random.Generator, durations: list[float], gaps: list[float], seconds: float
) -> tuple[list[float], float]:
    """Start times (and the time scale applied) for segments played in order, fitted into 90% of the clip."""
    total = sum(durations) + sum(gaps)
    scale = min(1.0, 0.9 * seconds / total)
    durations = [d * scale for d in durations]
    gaps = [g * scale for g in gaps]
    t = float(rng.uniform(0.02, max(0.02, seconds - total * scale - 0.02)))
    starts = []
    for i, d in enumerate(durations):
        starts.append(t)
        t += d + (gaps[i] if i < len(gaps) else 0.0)
    return starts, scale


def finish(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add the noise floor and keep samples within [-1, 1]."""
    clip = clip + rng.normal(0.0, NOISE_RMS, size=clip.shape).astype(np.float32)
    return np.clip(clip, -1.0, 1.0).astype(np.float32)
