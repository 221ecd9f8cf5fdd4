"""Where a run's host memory goes: resident memory (pinned buffers included) summed per kind of process, sampled in
the background while the run lasts; the table holds each kind's peak and what it held when the processes together
held most.

    python benchmarks/host_memory.py [--seconds 5] [--interval 0.5]    # sample this machine for a while, print

grpo_step_bench.py runs a sampler beside every 7B run and writes the table beside its log. Processes are grouped by
what Ray and vLLM name them (``ray::WorkerDict``, ``ray::AgentLoopWorkerTQ``, ``VLLM::EngineCore``, ...), others by
their program (``python -m verl.trainer.main_ppo`` is ``main_ppo``). It sees the whole host: with two queues side by
side, both runs' processes are in the table. The moment the table describes is chosen by the processes' summed
resident memory, not by the host's memory in use: a run started right after another finds the host still full of
memory the exiting processes have not yet given back, which no living process holds (2026-11-30: 143 GB in use at
the next run's first sample).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

PROC = Path("/proc")


def label(argv: list[str]) -> str:
    """The group a process belongs to, from its command line (Ray and vLLM rewrite theirs to name the actor)."""
    if not argv or not argv[0]:
        return "other"
    if argv[0].startswith(("ray::", "VLLM::")):  # ray::WorkerDict.actor_rollout_ref_init_model -> ray::WorkerDict
        kind, title = argv[0].split("::", 1)
        # a named actor shows its name first: ray::vllm_server_0_0:vLLMHttpServer.generate -> ray::vLLMHttpServer
        return f"{kind}::{title.split()[0].split('.')[0].rsplit(':', 1)[-1]}"
    program = os.path.basename(argv[0].split()[0])
    if program.startswith("python"):
        rest = argv[1:]
        if len(rest) >= 2 and rest[0] == "-m":
            return rest[1].rsplit(".", 1)[-1]
        if rest[:1] == ["-c"]:
            return f"{program} -c"
        script = next((arg for arg in rest if not arg.startswith("-")), "")
        return os.path.basename(script) or program
    return program


def rss_gb(pid: str = "self") -> float:
    """A process's resident memory in GB, pinned buffers included (0 when it is gone or hidden)."""
    try:
        for line in (PROC / pid / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e6  # kB
    except OSError:
        pass
    return 0.0


def snapshot() -> tuple[float, dict[str, float]]:
    """The host's memory in use (MemTotal - MemAvailable, GB) and the resident GB of each group of processes."""
    info = {}
    for line in (PROC / "meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0])
    used = (info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0))) / 1e6
    groups: dict[str, float] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        rss = rss_gb(entry.name)
        if rss:
            name = label([a for a in argv if a] or [""])
            groups[name] = groups.get(name, 0.0) + rss
    return used, groups


class Sampler:
    """Samples ``snapshot`` every ``interval`` seconds on a daemon thread until ``stop``."""

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.samples = 0
        self.start_used = 0.0  # the host's memory in use at the first sample
        self.peak_used = 0.0  # ... at its highest
        self.peak_held = 0.0  # the processes' summed resident memory at its highest
        self.used_at_held = 0.0  # the host's memory in use at that moment
        self.at_peak: dict[str, float] = {}  # each group's resident memory at that moment
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="host-memory", daemon=True)

    def _run(self) -> None:
        while True:
            used, groups = snapshot()
            if not self.samples:
                self.start_used = used
            self.samples += 1
            self.peak_used = max(self.peak_used, used)
            for name, gb in groups.items():
                self.peaks[name] = max(self.peaks.get(name, 0.0), gb)
            held = sum(groups.values())
            if held >= self.peak_held:
                self.peak_held, self.used_at_held, self.at_peak = held, used, groups
            if self._stop.wait(self.interval):
                return

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> Sampler:
        self._stop.set()
        self._thread.join()
        return self

    def table(self, top: int = 12) -> str:
        """Markdown: the groups with the largest peaks, each one's peak and what it held when all held most."""
        names = sorted(self.peaks, key=lambda n: -self.peaks[n])
        rows = [f"| {n} | {self.peaks[n]:.1f} | {self.at_peak.get(n, 0.0):.1f} |" for n in names[:top]]
        if len(names) > top:
            rest = names[top:]
            rows.append(f"| {len(rest)} more | {sum(self.peaks[n] for n in rest):.1f} | "
                        f"{sum(self.at_peak.get(n, 0.0) for n in rest):.1f} |")
        title = (f"Host memory in use: {self.start_used:.1f} GB at the first sample, {self.peak_used:.1f} GB at its "
                 f"peak; the processes held most together ({self.peak_held:.1f} GB, shared pages counted once per "
                 f"process) when the host had {self.used_at_held:.1f} GB in use. {self.samples} samples, every "
                 f"{self.interval:g} s; resident GB per kind of process:")
        return "\n".join([title, "",
                          "| processes | peak GB | GB when all held most |", "|---|---:|---:|", *rows])


def main(argv: list[str] | None = None) -> int:
    """Sample this machine for ``--seconds`` and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=0.5)
    a = ap.parse_args(argv)
    sampler = Sampler(a.interval).start()
    time.sleep(a.seconds)
    print(sampler.stop().table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
