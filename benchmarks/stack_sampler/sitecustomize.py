"""Wall-clock stack sampler for every Python process of a run: verl's driver, its Ray workers, vLLM's server.

Put this folder first on PYTHONPATH and set R1AQA_STACKS_DIR; every Python process started with that environment
(Ray passes it on to its workers) then samples all its threads' stacks every R1AQA_STACKS_INTERVAL seconds (default
0.05) and rewrites ``stacks-<pid>.json`` in that folder every 10 s. Each sample stands for the time since the one
before it, measured: on a busy host the sampler's thread wakes late, and counting samples at the nominal interval
would then undercount (0.89 s for 1.5 s of spinning, once, in the tests). ``benchmarks/stack_report.py`` turns the files
into a table of where each Ray task's time goes. Without R1AQA_STACKS_DIR importing this does nothing.

Why not py-spy or torch.profiler: the lent GPU machine has no py-spy (nor gdb, strace or perf; the device notes),
and torch.profiler sees only the process it is started in, while verl's step spans a driver and several Ray
actors. A wall-clock sampler shows where Python waits too, which is where a CUDA-bound step shows up (in the
call that synchronises).
"""

from __future__ import annotations

import os

_DIR = os.environ.get("R1AQA_STACKS_DIR")


def _short(path: str) -> str:
    """A source path without its site-packages / stdlib prefix."""
    for marker in ("site-packages/", "r1aqa-site/", "/lib/python3."):
        i = path.rfind(marker)
        if i >= 0:
            rest = path[i + len(marker):]
            return rest.split("/", 1)[1] if marker == "/lib/python3." and "/" in rest else rest
    return path


def _start() -> None:
    """Start the sampling thread of this process (and again in every forked child)."""
    import collections
    import json
    import sys
    import threading
    import time

    interval = float(os.environ.get("R1AQA_STACKS_INTERVAL", "0.05"))
    os.makedirs(_DIR, exist_ok=True)
    state = {"counts": collections.Counter(), "seconds": collections.Counter(), "pid": os.getpid(), "title": "",
             "title_at": 0.0}

    def title() -> str:
        # Ray renames its workers per task ("ray::WorkerDict.actor_rollout_update_actor"); read it at most once a second
        now = time.monotonic()
        if now - state["title_at"] > 1.0:
            try:
                with open("/proc/self/cmdline", "rb") as f:
                    state["title"] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
            except OSError:
                state["title"] = " ".join(sys.argv)[:160]
            state["title_at"] = now
        return state["title"]

    def dump() -> None:
        rows = [[t, th, list(st), n, state["seconds"][(t, th, st)]] for (t, th, st), n in state["counts"].items()]
        path = os.path.join(_DIR, f"stacks-{state['pid']}.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"pid": state["pid"], "interval": interval, "rows": rows}, f)
        os.replace(path + ".tmp", path)

    def loop() -> None:
        me = threading.get_ident()
        last = previous = time.monotonic()
        while True:
            time.sleep(interval)
            now = time.monotonic()
            elapsed, previous = now - previous, now
            names = {t.ident: t.name for t in threading.enumerate()}
            t = title()
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                stack = []
                leaf = True
                while frame is not None and len(stack) < 100:
                    code = frame.f_code
                    line = frame.f_lineno if leaf else code.co_firstlineno
                    stack.append(f"{code.co_name} {_short(code.co_filename)}:{line}")
                    frame, leaf = frame.f_back, False
                stack.reverse()
                key = (t, names.get(ident, str(ident)), tuple(stack))
                state["counts"][key] += 1
                state["seconds"][key] += elapsed
            if time.monotonic() - last > 10:
                last = time.monotonic()
                try:
                    dump()
                except OSError:
                    pass

    def begin() -> None:
        state["counts"] = collections.Counter()
        state["seconds"] = collections.Counter()
        state["pid"] = os.getpid()
        state["title_at"] = 0.0
        threading.Thread(target=loop, name="r1aqa-stack-sampler", daemon=True).start()

    import atexit

    atexit.register(lambda: state["counts"] and dump())
    os.register_at_fork(after_in_child=begin)
    begin()


if _DIR:
    try:
        _start()
    except Exception as e:  # a profiling aid must never stop the process it watches
        import sys

        print(f"r1aqa stack sampler not started: {e!r}", file=sys.stderr)
