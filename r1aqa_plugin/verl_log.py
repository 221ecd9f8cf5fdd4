"""Reading verl's console logger: ``step:N - key:value - key:value ...`` lines into numbers per step.

verl prints one such line per training step (Ray prefixes and ANSI colours around it), with values like ``0.5``,
``np.float64(2.0)`` or ``np.int32(2)``. Used by the benchmarks, the learning-proof plots and the GPU tests.
"""

from __future__ import annotations

import re
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STEP = re.compile(r"(?:^|\s|\))step:(\d+) - (.*)$")
_NUMPY_SCALAR = re.compile(r"^np\.\w+\((.*)\)$")


def _value(text: str) -> Any:
    text = text.strip()
    match = _NUMPY_SCALAR.match(text)
    if match:
        text = match.group(1)
    try:
        return float(text)
    except ValueError:
        return text


def step_metrics(log: str) -> dict[int, dict[str, Any]]:
    """``{step: {metric: value}}`` in step order; numbers as floats, anything else kept as text."""
    steps: dict[int, dict[str, Any]] = {}
    for raw in log.splitlines():
        match = _STEP.search(_ANSI.sub("", raw).rstrip())
        if not match:
            continue
        metrics = steps.setdefault(int(match.group(1)), {})
        for part in match.group(2).split(" - "):
            key, sep, value = part.partition(":")
            if sep:
                metrics[key.strip()] = _value(value)
    return dict(sorted(steps.items()))
