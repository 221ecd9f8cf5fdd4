"""synthetic-aqa: seeded, balanced, and answerable only by listening."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from r1aqa_plugin.audio import SAMPLE_RATE, load_audio
from r1aqa_plugin.data import BuildReport, build_dataset, get_dataset, read_parquet, synthetic
from r1aqa_plugin.data.records import BuildError
from r1aqa_plugin.data.synthetic import music, speech
from r1aqa_plugin.data.synthetic.tasks import TASKS

SOUND_TASKS = ["beep_count", "pitch_order", "duration_order", "loudness_order"]


def generate(report=None, **options):
    return list(get_dataset("synthetic-aqa").builder(report or BuildReport("synthetic-aqa"), **options))


def needs(family):
    reason = synthetic.UNAVAILABLE[family]()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def sound_rows():
    return generate(size=400, seed=3, tasks="sound", clip_seconds=3.0)


def test_the_same_seed_gives_identical_rows_and_another_seed_does_not():
    a = generate(size=12, seed=5, tasks="sound")
    assert a == generate(size=12, seed=5, tasks="sound")
    other = generate(size=12, seed=6, tasks="sound")
    assert [r["audios"] for r in a] != [r["audios"] for r in other]


def test_worker_processes_produce_exactly_the_single_process_rows():
    assert generate(size=16, seed=2, tasks="sound", workers=2) == generate(size=16, seed=2, tasks="sound")


def test_every_answer_position_is_correct_equally_often_per_task(sound_rows):
    by_task = defaultdict(Counter)
    for row in sound_rows:
        by_task[row["extra_info"]["sub_category"]][row["choices"].index(row["answer"])] += 1
    assert set(by_task) == set(SOUND_TASKS)
    for task, positions in by_task.items():
        assert len(positions) == TASKS[task].n_choices
        assert max(positions.values()) - min(positions.values()) <= 1, (task, positions)


def test_every_answer_is_equally_frequent_per_task(sound_rows):
    by_task = defaultdict(Counter)
    for row in sound_rows:
        by_task[row["extra_info"]["sub_category"]][row["answer"]] += 1
    for task, answers in by_task.items():
        assert set(answers) == set(TASKS[task].options)
        assert max(answers.values()) - min(answers.values()) <= 1, (task, answers)


def test_question_text_does_not_reveal_the_answer(sound_rows):
    answers_per_text = defaultdict(Counter)
    for row in sound_rows:
        answers_per_text[(row["extra_info"]["sub_category"], row["question"])][row["answer"]] += 1
    for (task, text), answers in answers_per_text.items():
        assert set(answers) == set(TASKS[task].options), (task, text, answers)
        # a text-only guesser's best rule (the majority answer per text) stays near chance
        assert max(answers.values()) / sum(answers.values()) < 1 / len(TASKS[task].options) + 0.15, (text, answers)


def _segments(wave: np.ndarray) -> list[tuple[int, int, float]]:
    """(start, end, rms) of the loud stretches, from a 5 ms RMS envelope."""
    hop = SAMPLE_RATE // 200
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop)
    active = np.sqrt((frames**2).mean(axis=1)) > 0.01
    edges = np.flatnonzero(np.diff(np.r_[0, active.astype(int), 0]))
    spans = [(s * hop, e * hop) for s, e in zip(edges[::2], edges[1::2])]
    return [(s, e, float(np.sqrt((wave[s:e] ** 2).mean()))) for s, e in spans]


def _frequency(segment: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), n=1 << 16))
    return float(np.fft.rfftfreq(1 << 16, 1 / SAMPLE_RATE)[spectrum.argmax()])


def _oracle(row) -> str:
    """Answer a sound question from the waveform alone, by plain signal processing."""
    wave = load_audio(row["audios"][0])
    segs = _segments(wave)
    task, question = row["extra_info"]["sub_category"], row["question"]
    if task == "beep_count":
        return ("one", "two", "three", "four", "five")[len(segs) - 1]
    assert len(segs) == 2, (row["extra_info"], segs)
    if task == "pitch_order":
        values = [_frequency(wave[s:e]) for s, e, _ in segs]
    elif task == "duration_order":
        values = [e - s for s, e, _ in segs]
    else:
        values = [rms for _, _, rms in segs]
    want_bigger = any(word in question for word in ("higher", "longer", "louder"))
    first_wins = values[0] > values[1] if want_bigger else values[0] < values[1]
    return "the first tone" if first_wins else "the second tone"


def test_a_signal_processing_oracle_answers_every_sound_question_from_the_audio(sound_rows):
    wrong = [(r["extra_info"]["id"], r["question"], r["answer"]) for r in sound_rows[:120] if _oracle(r) != r["answer"]]
    assert wrong == []


@pytest.mark.parametrize("family", ["sound", "music", "speech"])
def test_each_family_decodes_to_16k_clips_of_the_requested_length(family):
    needs(family)
    rows = generate(size=4, seed=0, tasks=family, clip_seconds=2.5)
    assert {r["data_source"] for r in rows} == {f"synthetic-aqa/{family}"}
    for row in rows:
        wave = load_audio(row["audios"][0])
        assert len(wave) == int(2.5 * SAMPLE_RATE)
        assert np.abs(wave).max() > 0.1  # something was actually rendered


def test_r1aqa_shaped_clips_are_ten_seconds():
    (row,) = generate(size=1, tasks="beep_count", clip_seconds=10)
    assert len(load_audio(row["audios"][0])) == 10 * SAMPLE_RATE


def test_an_unavailable_family_is_skipped_counted_and_explained(monkeypatch):
    expected_sound = generate(size=9, seed=1, tasks="sound,speech")
    monkeypatch.setitem(synthetic.UNAVAILABLE, "speech", lambda: "espeak-ng is not on PATH")
    report = BuildReport("synthetic-aqa")
    rows = generate(report, size=9, seed=1, tasks="sound,speech")
    assert report.skipped == {"speech family unavailable: espeak-ng is not on PATH": 2}  # rows 4, 5 of 9
    assert report.notes == ["speech tasks skipped: espeak-ng is not on PATH"]
    # the rows that can be made are the very rows a machine with espeak-ng makes
    assert rows == [r for r in expected_sound if r["data_source"] == "synthetic-aqa/sound"]


def test_an_unavailable_family_is_fatal_under_strict(monkeypatch):
    monkeypatch.setitem(synthetic.UNAVAILABLE, "music", lambda: "no soundfont")
    with pytest.raises(BuildError, match="music family unavailable: no soundfont"):
        generate(BuildReport("synthetic-aqa", strict=True), size=4, tasks="music")


def test_music_and_speech_report_why_they_cannot_run(monkeypatch, tmp_path):
    monkeypatch.setenv(music.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    assert "soundfont not found" in music.unavailable_reason()
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "espeak-ng is not on PATH" in speech.unavailable_reason()


@pytest.mark.parametrize(("options", "message"), [
    ({"tasks": "sound,whistle"}, "unknown synthetic task 'whistle'"),
    ({"size": 0}, "--size must be between 1 and 50000"),
    ({"clip_seconds": 1.0}, "--clip-seconds must be at least 2.0"),
    ({"choices": "1"}, "--choices must be 'task', 'all' or a number >= 2, got '1'"),
    ({"choices": "most"}, "--choices must be 'task', 'all' or a number >= 2, got 'most'"),
    ({"tasks": "beep_count:0"}, "--tasks 'beep_count:0': a weight must be a whole number from 1 to 16, got '0'"),
    ({"tasks": "beep_count:two"}, "--tasks 'beep_count:two': a weight must be a whole number from 1 to 16"),
    ({"tasks": "beep_count:2,sound"}, "--tasks gives 'beep_count' two weights \\(2 and 1 in 'sound'\\)"),
])  # fmt: skip
def test_bad_options_are_refused_with_the_option_named(options, message):
    with pytest.raises(BuildError, match=message):
        generate(**options)


def test_choices_all_lists_every_option_with_answer_and_position_balanced():
    rows = generate(size=120, seed=4, tasks="beep_count,pitch_order", choices="all")
    by_task = defaultdict(list)
    for row in rows:
        by_task[row["extra_info"]["sub_category"]].append(row)
    for task, task_rows in by_task.items():
        options = TASKS[task].options
        assert all(sorted(r["choices"]) == sorted(options) for r in task_rows), task
        positions = Counter(r["choices"].index(r["answer"]) for r in task_rows)
        answers = Counter(r["answer"] for r in task_rows)
        assert len(positions) == len(answers) == len(options), (task, positions, answers)
        assert max(positions.values()) - min(positions.values()) <= 1, (task, positions)
        assert max(answers.values()) - min(answers.values()) <= 1, (task, answers)


def test_a_task_weight_sets_its_share_of_rows_and_keeps_labels_and_positions_balanced():
    rows = generate(size=240, seed=4, tasks="beep_count:2,pitch_order", choices="all")
    tasks = Counter(r["extra_info"]["sub_category"] for r in rows)
    assert tasks == {"beep_count": 160, "pitch_order": 80}
    for task in tasks:
        task_rows = [r for r in rows if r["extra_info"]["sub_category"] == task]
        answers = Counter(r["answer"] for r in task_rows)
        positions = Counter(r["choices"].index(r["answer"]) for r in task_rows)
        assert len(answers) == len(positions) == len(TASKS[task].options), (task, answers, positions)
        assert max(answers.values()) - min(answers.values()) <= 1, (task, answers)
        assert max(positions.values()) - min(positions.values()) <= 1, (task, positions)


def test_weight_one_is_the_unweighted_plan_row_for_row():
    plain = synthetic.Plan(4, synthetic.task_cycle("sound"), 4.0, "train")
    assert [plain.ordinal(i) for i in range(40)] == [i // 4 for i in range(40)]  # k = i // len(tasks), as before weights
    assert generate(size=8, seed=4, tasks="beep_count:1,pitch_order") == generate(size=8, seed=4,
                                                                                   tasks="beep_count,pitch_order")
    assert synthetic.task_cycle("music:2,beep_count") == ("beep_count", "instrument", "instrument", "chord_quality",
                                                         "chord_quality")


def test_a_choice_count_is_capped_at_each_tasks_options_and_the_default_is_the_tasks_own():
    rows = generate(size=8, seed=4, tasks="beep_count,pitch_order", choices=3)
    assert {len(r["choices"]) for r in rows if r["extra_info"]["sub_category"] == "beep_count"} == {3}
    assert {len(r["choices"]) for r in rows if r["extra_info"]["sub_category"] == "pitch_order"} == {2}
    assert generate(size=8, seed=4, tasks="sound", choices="task") == generate(size=8, seed=4, tasks="sound")


def test_a_built_parquet_holds_wav_bytes_and_the_generator_parameters(tmp_path):
    report = build_dataset("synthetic-aqa", tmp_path / "s.parquet", size=8, tasks="sound", limit=6)
    rows = read_parquet(tmp_path / "s.parquet")
    assert report.rows_written == len(rows) == 6
    assert rows[0]["audios"][0]["bytes"][:4] == b"RIFF" and rows[0]["audios"][0]["path"] is None
    assert rows[0]["extra_info"]["id"] == "synthetic-aqa-s0-000000"
    assert '"beeps"' in rows[0]["extra_info"]["meta"]
