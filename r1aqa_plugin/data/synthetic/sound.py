"""Sound tasks made with numpy alone (they run anywhere, including GPU machines without espeak or a soundfont)."""

from __future__ import annotations

import numpy as np

from r1aqa_plugin.data.synthetic.clip import canvas, finish, layout, place, tone
from r1aqa_plugin.data.synthetic.tasks import Rendered, register_task

TWO_TONES = ("the first tone", "the second tone")
COUNT_WORDS = ("one", "two", "three", "four", "five")  # words, not digits: R1-AQA's math_verify reward
# would credit a bare "3" found anywhere in a completion
DIFFICULTIES = ("easy", "medium", "hard")


def _two_tones(
    rng: np.random.Generator,
    seconds: float,
    freqs: tuple[float, float],
    durations: tuple[float, float],
    amplitudes: tuple[float, float],
) -> np.ndarray:
    clip = canvas(seconds)
    starts, scale = layout(rng, list(durations), [float(rng.uniform(0.3, 0.6))], seconds)
    for start, f, d, a in zip(starts, freqs, durations, amplitudes):
        place(clip, tone(f, d * scale, a), start)
    return finish(clip, rng)


def _ordered(label: int, first_wins: float, second_wins: float) -> tuple[float, float]:
    """The pair (winner, loser) put in the order that makes option ``label`` (0 first, 1 second) correct."""
    return (first_wins, second_wins) if label == 0 else (second_wins, first_wins)


@register_task(
    "beep_count", family="sound", options=COUNT_WORDS, n_choices=4, description="count 1-5 beeps"
)
def beep_count(rng: np.random.Generator, label: int, seconds: float) -> Rendered:
    """``label + 1`` identical beeps at random spacing."""
    n = label + 1
    freq = float(rng.uniform(500.0, 1500.0))
    beep = float(rng.uniform(0.08, 0.2))
    gaps = [float(rng.uniform(0.12, 0.35)) for _ in range(n - 1)]
    clip = canvas(seconds)
    starts, scale = layout(rng, [beep] * n, gaps, seconds)
    for start in starts:
        place(clip, tone(freq, beep * scale, 0.5), start)
    params = {"beeps": n, "freq_hz": round(freq, 1), "beep_s": round(beep * scale, 3)}
    return Rendered("How many beeps are in the audio?", finish(clip, rng), None, params)


@register_task(
    "pitch_order", family="sound", options=TWO_TONES, n_choices=2, description="which of two tones is higher/lower"
)
def pitch_order(rng: np.random.Generator, label: int, seconds: float) -> Rendered:
    """Two equal-length tones; the asked-about one (higher or lower) is option ``label``."""
    difficulty = DIFFICULTIES[int(rng.integers(3))]
    semitones = float(rng.uniform(*{"easy": (7, 12), "medium": (3, 6), "hard": (1, 2)}[difficulty]))
    low = float(rng.uniform(200.0, 800.0))
    high = low * 2 ** (semitones / 12)
    ask_higher = bool(rng.integers(2))
    freqs = _ordered(label, high, low) if ask_higher else _ordered(label, low, high)
    d = float(rng.uniform(0.4, 0.8))
    question = f"Two tones are played one after the other. Which one is {'higher' if ask_higher else 'lower'} in pitch?"
    params = {"freqs_hz": [round(f, 1) for f in freqs], "semitones": round(semitones, 2)}
    return Rendered(question, _two_tones(rng, seconds, freqs, (d, d), (0.4, 0.4)), difficulty, params)


@register_task(
    "duration_order", family="sound", options=TWO_TONES, n_choices=2, description="which of two tones is longer/shorter"
)
def duration_order(rng: np.random.Generator, label: int, seconds: float) -> Rendered:
    """Two tones of one pitch; the asked-about one (longer or shorter) is option ``label``."""
    difficulty = DIFFICULTIES[int(rng.integers(3))]
    ratio = float(rng.uniform(*{"easy": (2.5, 3.0), "medium": (1.6, 2.2), "hard": (1.25, 1.45)}[difficulty]))
    short = float(rng.uniform(0.25, 0.5))
    ask_longer = bool(rng.integers(2))
    durations = _ordered(label, short * ratio, short) if ask_longer else _ordered(label, short, short * ratio)
    freq = float(rng.uniform(300.0, 1000.0))
    question = f"Two tones are played one after the other. Which one {'lasts longer' if ask_longer else 'is shorter'}?"
    params = {"durations_s": [round(d, 3) for d in durations], "ratio": round(ratio, 2)}
    return Rendered(question, _two_tones(rng, seconds, (freq, freq), durations, (0.4, 0.4)), difficulty, params)


@register_task(
    "loudness_order", family="sound", options=TWO_TONES, n_choices=2, description="which of two tones is louder/quieter"
)
def loudness_order(rng: np.random.Generator, label: int, seconds: float) -> Rendered:
    """Two tones of one pitch and length; the asked-about one (louder or quieter) is option ``label``."""
    difficulty = DIFFICULTIES[int(rng.integers(3))]
    db = float(rng.uniform(*{"easy": (12, 18), "medium": (6, 10), "hard": (3, 5)}[difficulty]))
    loud = float(rng.uniform(0.3, 0.8))
    quiet = loud * 10 ** (-db / 20)
    ask_louder = bool(rng.integers(2))
    amplitudes = _ordered(label, loud, quiet) if ask_louder else _ordered(label, quiet, loud)
    freq = float(rng.uniform(300.0, 1000.0))
    d = float(rng.uniform(0.4, 0.8))
    question = f"Two tones are played one after the other. Which one is {'louder' if ask_louder else 'quieter'}?"
    params = {"amplitudes": [round(a, 4) for a in amplitudes], "db": round(db, 2)}
    return Rendered(question, _two_tones(rng, seconds, (freq, freq), (d, d), amplitudes), difficulty, params)
