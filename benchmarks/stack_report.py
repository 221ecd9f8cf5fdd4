"""Where a run's time went, from the stack samples of ``benchmarks/stack_sampler`` (one file per process).

    R1AQA_STACKS_DIR=stacks PYTHONPATH=benchmarks/stack_sampler:$PYTHONPATH python -m verl.trainer.main_ppo ...
    python benchmarks/stack_report.py stacks [--groups 8] [--top 14] [--match update_actor] [--json out.json]
    python benchmarks/stack_report.py stacks --under _compute_score    # what one function's time is made of

Samples are grouped by process title (Ray names a worker after the task it runs, e.g.
``ray::WorkerDict.actor_rollout_update_actor``) and thread. A sample is busy unless the thread sits in a known wait
(lock, selector, queue, sleep, Ray's idle loop) or in the one stack that holds 90% of its thread's samples (a
thread parked in a C call all its life). For each of the busiest groups the table lists busy seconds, the
functions with the most inclusive time below the group's common trunk, and the innermost Python lines (self time;
a CUDA-bound step shows up in the line that synchronises, e.g. ``.item()`` or ``.tolist()``).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any

IDLE_LEAVES = {
    "wait", "_wait_for_tstate_lock", "select", "poll", "sleep", "get", "accept", "recv", "recv_into", "_recv",
    "main_loop", "_worker", "run_forever", "_run_once", "epoll", "readinto", "_wait_once", "_next", "join",
    "wait_for_futures", "_poll", "_wait", "acquire", "_shutdown",
    "get_objects", "print_logs", "listen_error_messages",  # Ray's ray.get and its log / error threads
}
# leaf frames that wait in C (no Python frame below them): a thread's run() calling a C target, Ray's monitors
IDLE_FRAMES = ("run threading.py:", "ray/_private/process_watcher.py", "ray/_private/log_monitor.py",
               "ray/autoscaler/")


def load(folder: Path) -> list[dict[str, Any]]:
    """The sample rows of every ``stacks-*.json`` in folder (title, thread, stack, count, seconds); files written
    before the sampler measured each sample's time count ``interval`` seconds a sample."""
    files = sorted(folder.glob("stacks-*.json"))
    if not files:
        raise SystemExit(f"no stacks-*.json in {folder}: was R1AQA_STACKS_DIR set and benchmarks/stack_sampler first on "
                         "PYTHONPATH?")
    rows = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"skipped {path.name}: {e}", file=sys.stderr)
            continue
        for title, thread, stack, count, *measured in data["rows"]:
            seconds = measured[0] if measured else count * data["interval"]
            rows.append({"pid": data["pid"], "title": title, "thread": thread, "stack": stack, "count": count,
                         "seconds": seconds})
    return rows


def _func(frame: str) -> str:
    """'name file:line' -> name."""
    return frame.split(" ", 1)[0]


def is_busy(stack: list[str]) -> bool:
    """False when the innermost Python frame is a known wait."""
    return bool(stack) and _func(stack[-1]) not in IDLE_LEAVES and not any(f in stack[-1] for f in IDLE_FRAMES)


def parked(rows: list[dict[str, Any]], share: float = 0.9) -> set[tuple[int, str, tuple[str, ...]]]:
    """(pid, thread, stack) that hold ``share`` or more of their thread's samples: a thread that sat in one C call
    (a socket, an event loop, a condition) for nearly its whole life, which no leaf-name list can know about."""
    per_thread: collections.Counter = collections.Counter()
    per_stack: collections.Counter = collections.Counter()
    for r in rows:
        per_thread[(r["pid"], r["thread"])] += r["count"]
        per_stack[(r["pid"], r["thread"], tuple(r["stack"]))] += r["count"]
    return {k for k, n in per_stack.items() if n >= share * per_thread[k[:2]] and per_thread[k[:2]] >= 20}


def under(rows: list[dict[str, Any]], func: str) -> list[dict[str, Any]]:
    """The samples that pass through a frame of function ``func``, each stack cut to start at its outermost one."""
    out = []
    for r in rows:
        hit = next((i for i, f in enumerate(r["stack"]) if _func(f) == func), None)
        if hit is not None:
            out.append({**r, "stack": r["stack"][hit:]})
    return out


def groups(rows: list[dict[str, Any]], match: str | None = None, below: str | None = None) -> list[dict[str, Any]]:
    """Busy samples per (title, thread), busiest first, each with inclusive and self seconds per frame; with
    ``below``, only the samples under a frame of that function (stacks cut there)."""
    by: dict[tuple[str, str], dict[str, Any]] = {}
    idle = parked(rows)  # judged on whole stacks, before any cut
    for r in rows if below is None else under(rows, below):
        if not is_busy(r["stack"]) or (match and match not in r["title"]):
            continue
        if below is None and (r["pid"], r["thread"], tuple(r["stack"])) in idle:
            continue
        g = by.setdefault((r["title"], r["thread"]), {
            "title": r["title"], "thread": r["thread"], "pids": set(), "busy_s": 0.0,
            "incl": collections.Counter(), "self": collections.Counter()})
        secs = r["seconds"]
        g["pids"].add(r["pid"])
        g["busy_s"] += secs
        g["self"][r["stack"][-1]] += secs
        for frame in set(r["stack"]):
            g["incl"][frame] += secs
    out = sorted(by.values(), key=lambda g: -g["busy_s"])
    for g in out:
        g["pids"] = sorted(g["pids"])
    return out


def below_trunk(g: dict[str, Any], top: int) -> list[tuple[str, float]]:
    """The frames with most inclusive time, leaving out the trunk that (nearly) every busy sample shares."""
    return [(f, s) for f, s in g["incl"].most_common() if s < 0.98 * g["busy_s"]][:top]


def render(gs: list[dict[str, Any]], n_groups: int, top: int) -> str:
    """Markdown: one section per group."""
    lines = []
    for g in gs[:n_groups]:
        lines.append(f"### {g['title'][:110]} [{g['thread']}] ({len(g['pids'])} process(es)): {g['busy_s']:.1f} s busy")
        lines.append("")
        lines.append("| inclusive s | share | frame |")
        lines.append("|---:|---:|---|")
        for frame, s in below_trunk(g, top):
            lines.append(f"| {s:.1f} | {s / g['busy_s']:.0%} | `{frame}` |")
        lines.append("")
        lines.append("| self s | share | innermost line |")
        lines.append("|---:|---:|---|")
        for frame, s in g["self"].most_common(max(3, top // 2)):
            lines.append(f"| {s:.1f} | {s / g['busy_s']:.0%} | `{frame}` |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: print the table for a folder of samples."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--groups", type=int, default=8, help="how many (process title, thread) groups to show")
    p.add_argument("--top", type=int, default=14, help="frames per group")
    p.add_argument("--match", help="only process titles containing this text")
    p.add_argument("--under", metavar="FUNCTION", help="only samples inside this function, its callees listed")
    p.add_argument("--json", type=Path, help="also write the groups (busy and inclusive seconds) here")
    a = p.parse_args(argv)
    gs = groups(load(a.folder), a.match, a.under)
    print(render(gs, a.groups, a.top))
    if a.json:
        a.json.write_text(json.dumps([{"title": g["title"], "thread": g["thread"], "pids": g["pids"],
                                       "busy_s": g["busy_s"], "frames": below_trunk(g, a.top),
                                       "self": g["self"].most_common(a.top)} for g in gs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
