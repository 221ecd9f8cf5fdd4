"""Music tasks rendered with real sampled instruments: tinysoundfont + the GM soundfont in the pretty_midi wheel.

Both are optional (``pip install --no-deps tinysoundfont pretty_midi``; tinysoundfont's pyaudio dependency is
only for live playback). ``unavailable_reason`` says why the family cannot run here, and the builder reports it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from r1aqa_plugin.audio import SAMPLE_RATE
from r1aqa_plugin.data.synthetic.clip import canvas, fade, finish, place
from r1aqa_plugin.data.synthetic.tasks import Rendered, register_task

SOUNDFONT_ENV = "R1AQA_SOUNDFONT"
# General MIDI programs (0-based) that sound clearly different in TimGM6mb.sf2.
INSTRUMENTS = {"piano": 0, "organ": 19, "guitar": 24, "violin": 40, "trumpet": 56, "flute": 73}
CHORD_INSTRUMENTS = ("piano", "organ", "guitar")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11, 12)
CHORD_INTERVALS = {"major": (0, 4, 7), "minor": (0, 3, 7)}


def default_soundfont() -> Path | None:
    """``$R1AQA_SOUNDFONT``, else the TimGM6mb.sf2 inside the pretty_midi package (found without importing it)."""
    if os.environ.get(SOUNDFONT_ENV):
        return Path(os.environ[SOUNDFONT_ENV])
    spec = importlib.util.find_spec("pretty_midi")  # importing pretty_midi would need mido; we only want a file
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "TimGM6mb.sf2"


def unavailable_reason(soundfont: Path | None = None) -> str | None:
    """Why music tasks cannot be rendered here, or None when they can."""
    if importlib.util.find_spec("tinysoundfont") is None:
        return "tinysoundfont is not installed (pip install --no-deps tinysoundfont pretty_midi)"
    path = soundfont or default_soundfont()
    if path is None:
        return f"no soundfont: pretty_midi is not installed and ${SOUNDFONT_ENV} is not set"
    if not Path(path).is_file():
        return f"soundfont not found: {path}"
    return None


@functools.lru_cache(maxsize=2)
def _synth(soundfont: str) -> tuple[Any, int]:
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
    return synth, synth.sfload(soundfont)


def render_notes(program: int, notes: list[tuple[float, float, list[int]]], seconds: float) -> np.ndarray:
    """Render ``(start_s, length_s, keys)`` events with one GM program into a mono clip of ``seconds``."""
    path = default_soundfont()
    if path is None:
        raise RuntimeError(unavailable_reason())
    synth, sfid = _synth(str(path))
    synth.sounds_off()  # a cached synth must not carry the previous row's decay into this one
    synth.program_select(0, sfid, 0, program)
    events = sorted(
        [(start, 1, key) for start, _, keys in notes for key in keys]
        + [(start + length, 0, key) for start, length, keys in notes for key in keys]
    )
    out = np.zeros(int(round(seconds * SAMPLE_RATE)) * 2, dtype=np.float32)
    cursor = 0
    for when, is_on, key in events:
        frame = min(int(round(when * SAMPLE_RATE)), len(out) // 2)
        if frame > cursor:
            out[cursor * 2 : frame * 2] = np.frombuffer(synth.generate(frame - cursor), dtype=np.float32)
            cursor = frame
        if is_on:
            synth.noteon(0, key, 100)
        else:
            synth.noteoff(0, key)
    if cursor < len(out) // 2:
        out[cursor * 2 :] = np.frombuffer(synth.generate(len(out) // 2 - cursor), dtype=np.float32)
    synth.sounds_off()
    return out.reshape(-1, 2).mean(axis=1)


def _normalised(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    peak = float(np.abs(wave).max())
    if peak == 0:
        raise RuntimeError("the soundfont rendered silence")
    return wave * (float(rng.uniform(0.4, 0.8)) / peak)


@register_task(
    "instrument",
    family="music",
    options=tuple(INSTRUMENTS),
    n_choices=4,
    description="which instrument plays a short melody",
)
def instrument(rng: np.random.Generator, label: int, seconds: float) -> Rendered:
    """A 4-8 note major-scale melody played on instrument ``label``."""
    name = tuple(INSTRUMENTS)[label]
    root = int(rng.integers(55, 68))
    n = int(rng.integers(4, 9))
    step = min(0.45, 0.8 * seconds / n)
    start = float(rng.uniform(0.05, max(0.05, seconds - n * step - 0.3)))
    keys = [root + MAJOR_SCALE[int(i)] for i in rng.integers(0, len(MAJOR_SCALE), size=n)]
    notes = [(start + i * step, step * 0.9, [k]) for i, k in enumerate(keys)]
    clip = canvas(seconds)
    place(clip, fade(_normalised(render_notes(INSTRUMENTS[name], notes, seconds), rng)), 0.0)
    params = {"program": INSTRUMENTS[name], "keys": keys, "note_s": round(step, 3)}
    return Rendered("Which instrument is playing in the audio?", finish(clip, rng), None, params)


@register_task(
    "chord_quality",
    family="music",
    options=tuple(CHORD_INTERVALS),
    n_choices=2,
    description="is a chord major or minor",
)
def chord_quality(rng: np.random.Generator, label: int, seconds: float) -> Rendered:
    """A triad (major for label 0, minor for 1) played twice: broken, then together."""
    quality = tuple(CHORD_INTERVALS)[label]
    name = CHORD_INSTRUMENTS[int(rng.integers(len(CHORD_INSTRUMENTS)))]
    root = int(rng.integers(48, 65))
    keys = [root + i for i in CHORD_INTERVALS[quality]]
    step = min(0.3, seconds / 10)
    start = float(rng.uniform(0.05, 0.2))
    notes = [(start + i * step, step * 0.95, [k]) for i, k in enumerate(keys)]
    notes.append((start + 3 * step + 0.1, min(1.5, seconds - start - 3 * step - 0.4), keys))
    clip = canvas(seconds)
    place(clip, fade(_normalised(render_notes(INSTRUMENTS[name], notes, seconds), rng)), 0.0)
    params = {"instrument": name, "keys": keys}
    return Rendered("Is the chord played in the audio major or minor?", finish(clip, rng), None, params)
