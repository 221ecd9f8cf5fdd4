"""Published MMAU test-mini numbers drawn beside ours, per MMAU version (sources: research notes r1aqa_mmau.md).

v1 numbers are the R1-AQA paper / README table (old leaderboard); v05.15.25 numbers are the official leaderboard
(GPT-4o-parsed). R1-AQA has no v05.15.25 number. Versions are told apart by data_source:
``mmau-test-mini-v1/<task>`` is v1 and ``mmau-test-mini/<task>`` is v05.15.25.
"""

from __future__ import annotations

from collections.abc import Iterable

# version -> system -> {sound, music, speech, total}; None = not published.
PUBLISHED: dict[str, dict[str, dict[str, float] | None]] = {
    "v1": {
        "Qwen2-Audio-7B-Instruct (direct)": {"sound": 54.95, "music": 50.98, "speech": 42.04, "total": 49.20},
        "R1-AQA (GRPO)": {"sound": 69.37, "music": 66.77, "speech": 57.36, "total": 64.50},
    },
    "v05.15.25": {
        "Qwen2-Audio-Instruct (leaderboard)": {"sound": 67.27, "music": 56.29, "speech": 55.26, "total": 59.60},
        "R1-AQA (GRPO)": None,
    },
}

_PREFIXES = {"mmau-test-mini-v1": "v1", "mmau-test-mini": "v05.15.25"}


def mmau_version(data_sources: Iterable[str | None]) -> str | None:
    """The one MMAU version of these data_sources, None for non-MMAU data; mixing versions is an error."""
    versions = {_PREFIXES.get(str(source).split("/", 1)[0]) for source in data_sources}
    if len(versions) > 1:
        raise ValueError(f"items mix MMAU versions / non-MMAU data ({sorted(map(str, versions))}); score them apart")
    return versions.pop() if versions else None
