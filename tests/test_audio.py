"""load_audio on good and bad inputs: every failure names the item, every resample keeps the pitch."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from r1aqa_plugin.audio import SAMPLE_RATE, AudioError, encode_wav, load_audio, load_audio_with_info


def sine(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(wave: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[spectrum.argmax()])


def test_a_missing_file_raises_an_error_naming_the_path(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="nope.wav.*not found"):
        load_audio(path)


def test_a_truncated_wav_is_reported_as_undecodable(tmp_path):
    good = encode_wav(sine(440, 1.0, SAMPLE_RATE))
    path = tmp_path / "cut.wav"
    path.write_bytes(good[:30])  # the RIFF header is cut in the middle
    with pytest.raises(AudioError, match="cut.wav.*cannot decode"):
        load_audio(path)


def test_random_bytes_are_reported_as_undecodable(tmp_path):
    path = tmp_path / "noise.flac"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(AudioError, match="noise.flac.*cannot decode"):
        load_audio(path)


def test_empty_bytes_are_rejected():
    with pytest.raises(AudioError, match="empty"):
        load_audio(b"")


def test_an_item_with_neither_path_nor_bytes_is_rejected():
    with pytest.raises(AudioError, match="neither 'path' nor 'bytes'"):
        load_audio({"path": None, "bytes": None})


def test_a_zero_length_wav_is_rejected(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="empty.wav.*zero samples"):
        load_audio(path)


def test_nan_samples_are_rejected(tmp_path):
    wave = sine(440, 0.5, SAMPLE_RATE)
    wave[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, wave, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*NaN"):
        load_audio(path)


@pytest.mark.parametrize("sr", [8_000, 22_050, 44_100, 48_000])
def test_resampling_to_16k_keeps_the_length_in_seconds_and_the_pitch(tmp_path, sr):
    path = tmp_path / f"tone_{sr}.wav"
    sf.write(path, sine(1000.0, 2.0, sr), sr, subtype="PCM_16")
    wave, info = load_audio_with_info(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 2 * SAMPLE_RATE) <= 1
    assert info.source_sr == sr
    assert abs(peak_frequency(wave) - 1000.0) < 2.0


def test_stereo_is_averaged_by_default_and_can_keep_the_first_channel(tmp_path):
    left = sine(440, 1.0, SAMPLE_RATE, 0.4)
    right = np.zeros_like(left)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    mean, info = load_audio_with_info(path)
    first = load_audio(path, channels="first")
    assert info.channels == 2
    np.testing.assert_allclose(mean, left / 2, atol=1e-6)
    np.testing.assert_allclose(first, left, atol=1e-6)


def test_an_unknown_channel_policy_is_an_error(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(encode_wav(sine(440, 0.2, SAMPLE_RATE)))
    with pytest.raises(AudioError, match="channel policy"):
        load_audio(path, channels="left")


@pytest.fixture(scope="module")
def minute_clip(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("long") / "minute.wav"
    sf.write(path, sine(300, 60.0, SAMPLE_RATE, 0.1), SAMPLE_RATE, subtype="PCM_16")
    return str(path)


def test_a_60_second_clip_is_truncated_to_30_seconds_by_default(minute_clip):
    wave, info = load_audio_with_info(minute_clip)
    assert len(wave) == 30 * SAMPLE_RATE
    assert info.truncated and info.seconds == pytest.approx(60.0)


def test_a_60_second_clip_is_an_error_under_the_error_policy(minute_clip):
    with pytest.raises(AudioError, match="minute.wav.*60.0 s.*30 s"):
        load_audio(minute_clip, long_audio="error")


def test_a_60_second_clip_is_kept_whole_under_the_keep_policy(minute_clip):
    wave, info = load_audio_with_info(minute_clip, long_audio="keep")
    assert len(wave) == 60 * SAMPLE_RATE and not info.truncated


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [
        ("FLAC", "PCM_16"),
        ("OGG", "VORBIS"),  # lossy: only the length and the pitch are compared
        ("MP3", "MPEG_LAYER_III"),  # libsndfile >= 1.1 writes mp3
    ],
)
def test_compressed_formats_decode_from_a_path_and_from_bytes(tmp_path, fmt, subtype):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}/{subtype}")
    original = sine(880, 1.0, 44_100)
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, original, 44_100, format=fmt, subtype=subtype)
    from_path = load_audio(path)
    from_bytes = load_audio({"path": None, "bytes": path.read_bytes()})
    np.testing.assert_array_equal(from_path, from_bytes)
    assert abs(len(from_path) - SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # mp3 adds encoder padding
    assert abs(peak_frequency(from_path) - 880.0) < 3.0
    if fmt == "FLAC":
        assert np.abs(from_path - load_audio(encode_wav(original, 44_100))).max() < 1e-3


def test_encode_wav_round_trips_through_load_audio():
    wave = sine(500, 0.5, SAMPLE_RATE)
    back = load_audio(encode_wav(wave))
    assert np.abs(back - wave).max() < 1e-4


def test_cached_load_decodes_each_distinct_clip_once_and_hands_out_copies(tmp_path, monkeypatch):
    from r1aqa_plugin import audio
    from r1aqa_plugin.once_cache import OnceCache

    monkeypatch.setattr(audio, "_decoded", OnceCache(8))
    calls = []
    real = audio.load_audio
    monkeypatch.setattr(audio, "load_audio", lambda s, **k: calls.append(1) or real(s, **k))
    t = np.arange(16000) / 16000
    data = audio.encode_wav((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    first = audio.load_audio_cached({"bytes": data, "path": None}, channels="mean")
    first[:] = 0  # a caller's in-place change must not reach the next caller
    again = audio.load_audio_cached(data, channels="mean")  # the same content, as raw bytes
    assert len(calls) == 1 and np.abs(again).max() > 0.2
    np.testing.assert_array_equal(again, real(data, channels="mean"))
    audio.load_audio_cached(data, channels="first")  # other options: another entry
    assert len(calls) == 2
    path = tmp_path / "a.wav"
    path.write_bytes(data)
    audio.load_audio_cached(str(path))
    audio.load_audio_cached(str(path))
    assert len(calls) == 3
    path.write_bytes(audio.encode_wav(np.zeros(8000, dtype=np.float32)))  # rewritten: size/mtime change
    assert audio.load_audio_cached(str(path)).shape == (8000,) and len(calls) == 4
    with pytest.raises(audio.AudioError, match="missing.wav"):
        audio.load_audio_cached(str(tmp_path / "missing.wav"))
