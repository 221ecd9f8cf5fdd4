"""Speech tasks spoken by espeak-ng (apt ``espeak-ng``), run as a subprocess; optional like the music family."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np

from r1aqa_plugin.audio import SAMPLE_RATE
from r1aqa_plugin.data.synthetic.clip import canvas, fade, finish, place
from r1aqa_plugin.data.synthetic.tasks import Rendered, register_task

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LANGUAGES = {"English": "en-us", "German": "de", "French": "fr", "Spanish": "es", "Italian": "it"}
# espeak-ng voice variants (male m1-m7, female f1-f4): speaker variety so that no single voice is the cue
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4")


def unavailable_reason() -> str | None:
    """Why speech tasks cannot be rendered here, or None when they can."""
    if shutil.which("espeak-ng") is None:
        return "espeak-ng is not on PATH (apt-get install espeak-ng)"
    return None


def speak(text: str, voice: str, *, speed: int, pitch: int) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng and return it as float32 mono at 16 kHz."""
    import soundfile as sf
    import soxr

    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')}")
    wave, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    return soxr.resample(wave, sr, SAMPLE_RATE).astype(np.float32)


def _voice_params(rng: np.random.Generator) -> tuple[str, int, int]:
    return VARIANTS[int(rng.integers(len(VARIANTS)))], int(rng.integers(120, 181)), int(rng.integers(30, 71))


def _place_speech(rng: np.random.Generator, wave: np.ndarray, seconds: float) -> np.ndarray:
    """Normalise, cut to 95% of the clip if too long, and put at a random offset."""
    wave = wave * (float(rng.uniform(0.3, 0.7)) / max(float(np.abs(wave).max()), 1e-6))
    wave = fade(wave[: int(0.95 * seconds * SAMPLE_RATE)].copy(), 0.02)
    clip = canvas(seconds)
    room = seconds - len(wave) / SAMPLE_RATE
    place(clip, wave, float(rng.uniform(0.0, max(room, 0.0))))
    return finish(clip, rng)


@register_task(
    "spoken_digit", family="speech", options=DIGIT_WORDS, n_choices=4, description="which digit word is spoken"
)
def spoken_digit(rng: np.random.Generator, label: int, seconds: float) -> Rendered:
    """One English digit word in a random espeak-ng voice, rate and pitch."""
    variant, speed, pitch = _voice_params(rng)
    wave = speak(DIGIT_WORDS[label], f"en-us+{variant}", speed=speed, pitch=pitch)
    params = {"word": DIGIT_WORDS[label], "variant": variant, "speed": speed, "pitch": pitch}
    return Rendered("Which number is spoken in the audio?", _place_speech(rng, wave, seconds), None, params)


@register_task(
    "spoken_language",
    family="speech",
    options=tuple(LANGUAGES),
    n_choices=4,
    description="which language a string of digits is read in",
)
def spoken_language(rng: np.random.Generator, label: int, seconds: float) -> Rendered:
    """Five random digits read by the espeak-ng voice of language ``label`` (espeak reads digits in that language)."""
    language = tuple(LANGUAGES)[label]
    variant, speed, pitch = _voice_params(rng)
    digits = " ".join(str(int(d)) for d in rng.integers(0, 10, size=5))
    wave = speak(digits, f"{LANGUAGES[language]}+{variant}", speed=speed, pitch=pitch)
    params = {"language": language, "digits": digits, "variant": variant, "speed": speed, "pitch": pitch}
    return Rendered("Which language is spoken in the audio?", _place_speech(rng, wave, seconds), None, params)
