"""Plots and tables for the learning proof from verl's console log and `r1aqa eval` folders.

    python examples/learning_proof/plot.py --log grpo.log [--log grpo-2.log ...] \
        --eval before=eval-before --eval after=eval-after --out docs/learning

verl's console logger prints one line per step: ``step:N - key:value - key:value ...`` (possibly prefixed by
``(TaskRunner pid=...)``). Several logs (a run resumed over several commands) are merged, a later log's step
replacing an earlier one's. Writes OUT/val_accuracy.png (validation accuracy per data_source vs step),
OUT/reward.png (mean reward, format and accuracy parts where logged, and response length vs step) and
OUT/summary.md (the validation table and, for each --eval folder, accuracy per task in normal / silenced /
shuffled-choices evaluation, scored with the training reward's rule, next to chance; then per task family, issue
8's four checks, each met or not: ``acceptance``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from r1aqa_plugin.verl_log import step_metrics

VAL_RE = re.compile(r"^val-core/(.+)/acc/mean@\d+$")
REWARD_KEYS = ("critic/score/mean", "critic/rewards/mean")
LENGTH_KEY = "response_length/mean"


def parse_log(text: str) -> dict[int, dict[str, float]]:
    """``{step: {metric: value}}`` from verl console output (non-numeric values skipped)."""
    return {step: {k: v for k, v in metrics.items() if isinstance(v, float)}
            for step, metrics in step_metrics(text).items()}


def merge_logs(texts: list[str]) -> dict[int, dict[str, float]]:
    """Merge several logs; a later log's metrics for a step replace an earlier one's."""
    merged: dict[int, dict[str, float]] = {}
    for text in texts:
        for step, metrics in parse_log(text).items():
            merged[step] = metrics if step not in merged else {**merged[step], **metrics}
    return dict(sorted(merged.items()))


def val_series(steps: dict[int, dict[str, float]]) -> dict[str, list[tuple[int, float]]]:
    """``{data_source: [(step, accuracy), ...]}`` from ``val-core/<source>/acc/mean@N``."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for step, metrics in steps.items():
        for key, value in metrics.items():
            m = VAL_RE.match(key)
            if m:
                out[m.group(1)].append((step, value))
    return dict(sorted(out.items()))


def series(steps: dict[int, dict[str, float]], key: str) -> list[tuple[int, float]]:
    """``[(step, value)]`` of one metric."""
    return [(s, m[key]) for s, m in steps.items() if key in m]


def plot_val(val: dict[str, list[tuple[int, float]]], path: Path, chance: dict[str, float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (source, pts) in enumerate(val.items()):
        color = f"C{i % 10}"
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=3, label=source, color=color)
        if chance and source in chance:
            ax.axhline(100 * chance[source], color=color, ls=":", lw=1)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("validation accuracy (%, greedy)")
    ax.set_ylim(0, 100)
    ax.set_title("Validation accuracy per task (dotted: chance)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reward(steps: dict[int, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key in REWARD_KEYS:
        pts = series(steps, key)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key)
            break
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward (accuracy + format, max 2)")
    ax.grid(alpha=0.3)
    length = series(steps, LENGTH_KEY)
    if length:
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in length], [p[1] for p in length], color="C3", ls="--", lw=1, label=LENGTH_KEY)
        ax2.set_ylabel("response length (tokens)")
        ax2.legend(fontsize=7, loc="lower right")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Training reward vs step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def val_table(val: dict[str, list[tuple[int, float]]]) -> str:
    """Markdown: first, best and last validation accuracy per data_source."""
    lines = ["| data_source | first (step) | best (step) | last (step) |", "|---|---:|---:|---:|"]
    for source, pts in val.items():
        first, last = pts[0], pts[-1]
        best = max(pts, key=lambda p: p[1])
        lines.append(f"| {source} | {100 * first[1]:.1f} ({first[0]}) | {100 * best[1]:.1f} ({best[0]}) | "
                     f"{100 * last[1]:.1f} ({last[0]}) |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- r1aqa eval folders
def task_and_output(item: dict[str, Any]) -> tuple[str, str]:
    """A prediction's ``family/task`` key and its raw completion (the extracted one where no raw was written)."""
    return (f"{item.get('task', '?')}/{item.get('sub-category') or '?'}",
            item.get("model_output_raw", item.get("model_output", "")))


def score_predictions(items: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per sub-category (and 'all'): n, accuracy (training reward rule), format rate, chance (mean 1/#choices)."""
    from r1aqa_plugin.rewards.answer import is_answer_format
    from r1aqa_plugin.rewards.r1aqa import r1aqa_accuracy

    groups: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for item in items:
        key, raw = task_and_output(item)
        row = (r1aqa_accuracy(raw, item["answer"], item["choices"]), float(is_answer_format(raw.strip())),
               1.0 / len(item["choices"]))
        groups[key].append(row)
        groups["all"].append(row)
    return {k: {"n": len(v), "acc": sum(r[0] for r in v) / len(v), "format": sum(r[1] for r in v) / len(v),
                "chance": sum(r[2] for r in v) / len(v)} for k, v in sorted(groups.items(), key=lambda kv: kv[0] == "all")}


def eval_runs(folder: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{condition: scores}`` for predictions.json (normal), predictions_silenced.json, predictions_sampled.json,
    predictions_shuffled_K."""
    return {name: score_predictions(json.loads(path.read_text(encoding="utf-8")))
            for name, path in prediction_files(folder)}


def prediction_files(folder: Path) -> list[tuple[str, Path]]:
    """``(condition, path)`` of an eval folder's prediction files that exist, normal first."""
    files = [("normal", folder / "predictions.json"), ("silenced", folder / "predictions_silenced.json"),
             ("sampled", folder / "predictions_sampled.json")]
    files += [(f"shuffled {p.stem.rsplit('_', 1)[-1]}", p) for p in sorted(folder.glob("predictions_shuffled_*.json"))]
    return [(name, path) for name, path in files if path.exists()]


def eval_table(evals: dict[str, Path]) -> str:
    """Markdown: accuracy (format rate) per task for each eval folder and condition, with chance."""
    cols: list[tuple[str, dict[str, dict[str, float]]]] = []
    for label, folder in evals.items():
        for cond, scores in eval_runs(folder).items():
            cols.append((f"{label} {cond}", scores))
    if not cols:
        return "(no r1aqa eval predictions found)"
    tasks: list[str] = []
    for _, scores in cols:
        tasks += [t for t in scores if t not in tasks]
    tasks = [t for t in tasks if t != "all"] + ["all"]
    head = "| task | n | chance | " + " | ".join(c for c, _ in cols) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(cols)]
    for t in tasks:
        ref = next((s[t] for _, s in cols if t in s), None)
        cells = [f"{100 * s[t]['acc']:.1f} ({100 * s[t]['format']:.0f})" if t in s else "-" for _, s in cols]
        lines.append(f"| {t} | {ref['n'] if ref else '-'} | {100 * ref['chance']:.1f} | " + " | ".join(cells) + " |")
    lines.append("\nCells: accuracy % under the training reward's rule (R1-AQA's `<answer>` extraction, exact "
                 "choice text), and in brackets the % of completions in exact `<answer>...</answer>` format.")
    return "\n".join(lines)


def off_list_table(evals: dict[str, Path]) -> str:
    """Markdown: per eval folder, condition and task, the answers that name none of the listed choices."""
    from r1aqa_plugin.rewards.answer import extract_lenient
    from r1aqa_plugin.rewards.choice import names_a_listed_choice

    lines = []
    for label, folder in evals.items():
        for cond, path in prediction_files(folder):
            groups: dict[str, Counter[str]] = defaultdict(Counter)
            totals: Counter[str] = Counter()
            for item in json.loads(path.read_text(encoding="utf-8")):
                key, raw = task_and_output(item)
                totals[key] += 1
                # the training reward's rule: exact choice text (a case or letter variant is off the list too)
                if not names_a_listed_choice(raw, item["choices"]):
                    groups[key][extract_lenient(raw)] += 1
            for key, said in sorted(groups.items()):
                top = ", ".join(f"{text[:40]!r} {n}" for text, n in said.most_common(2))
                lines.append(f"| {label} {cond} | {key} | {sum(said.values())} of {totals[key]} | {top} |")
    if not lines:
        return "Every answer named one of the listed choices."
    return "\n".join(["| evaluation | task | answers off the list | most often |", "|---|---|---:|---|", *lines,
                      ("\nAn answer off the list is wrong whatever the audio: a whole task off the list, one text "
                       "repeated, is a collapsed policy, not a model that guesses.")])


def label_table(evals: dict[str, Path], conditions: tuple[str, ...] = ("normal", "sampled")) -> str:
    """Markdown: per eval folder, condition and task, each label's right answers and its most common wrong one."""
    from r1aqa_plugin.rewards.answer import extract_lenient
    from r1aqa_plugin.rewards.r1aqa import r1aqa_accuracy

    lines = []
    for label, folder in evals.items():
        for cond, path in prediction_files(folder):
            if cond not in conditions:
                continue
            total: dict[str, Counter[str]] = defaultdict(Counter)   # task -> label -> items
            right: dict[str, Counter[str]] = defaultdict(Counter)
            wrong: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
            said: dict[str, Counter[str]] = defaultdict(Counter)   # task -> extracted answer -> times
            for item in json.loads(path.read_text(encoding="utf-8")):
                (key, raw), gold = task_and_output(item), item["answer"]
                answer = extract_lenient(raw)
                said[key][answer] += 1
                total[key][gold] += 1
                if r1aqa_accuracy(raw, gold, item["choices"]):
                    right[key][gold] += 1
                else:
                    wrong[key][gold][answer] += 1
            for key in sorted(total):
                cells = []
                for gold in sorted(total[key]):
                    top = wrong[key][gold].most_common(1)
                    cells.append(f"{gold} {right[key][gold]}/{total[key][gold]}"
                                 + (f" ({top[0][0][:20]!r} {top[0][1]})" if top else ""))
                never = [g for g in sorted(total[key]) if not said[key][g]]
                lines.append(f"| {label} {cond} | {key} | {'; '.join(cells)} | {', '.join(never) or '-'} |")
    if not lines:
        return "(no r1aqa eval predictions found)"
    return "\n".join(["| evaluation | task | per label: right / n (most common wrong answer) | never answered |",
                      "|---|---|---|---|", *lines,
                      ("\nA label never answered caps its task's accuracy at (k-1)/k for k balanced labels, however "
                       "well the model hears the others (the thirteenth GPU run: four beeps, guitar).")])


def wilson_low(hits: float, n: int, z: float = 1.96) -> float:
    """Lower end of the 95% Wilson interval of a rate of ``hits`` out of ``n``."""
    if n == 0:
        return 0.0
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def family_scores(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per task family (the part of a ``family/task`` key before the slash): items, accuracy and chance, pooled
    over the family's tasks item by item."""
    out: dict[str, dict[str, float]] = {}
    for key, s in scores.items():
        if key == "all":
            continue
        f = out.setdefault(key.split("/", 1)[0], {"n": 0, "hits": 0.0, "chance_sum": 0.0})
        f["n"] += s["n"]
        f["hits"] += s["acc"] * s["n"]
        f["chance_sum"] += s["chance"] * s["n"]
    return {k: {"n": f["n"], "acc": f["hits"] / f["n"], "chance": f["chance_sum"] / f["n"],
                "low": wilson_low(f["hits"], int(f["n"]))} for k, f in sorted(out.items())}


ACCEPTANCE_RULES = (
    "Issue 8's acceptance as this table reads it, per task family the evaluation holds (its tasks pooled item by "
    "item): **start** every family within 5 points of chance before GRPO; **reach** at least one family >= 90% "
    "after; **others** every other family clearly above chance, read as the lower end of its 95% Wilson interval "
    "above chance + 5 (outside the band the issue calls chance); **silenced** every family within 5 points of chance "
    "after GRPO with the audio silenced.")


def acceptance(evals: dict[str, Path]) -> str:
    """Markdown: family scores before and after, and issue 8's four checks on them, each met or not."""
    runs = {label: eval_runs(folder) for label, folder in evals.items()}
    after = runs.get("after", {})
    if "normal" not in after:
        return "(no eval after: nothing to check)"
    fam = {(label, cond): family_scores(scores) for label, r in runs.items() for cond, scores in r.items()}
    now, silenced = fam[("after", "normal")], fam.get(("after", "silenced"))
    before = fam.get(("before", "normal"))
    lines = ["| family | n | chance | before | after | after, 95% low | after, silenced |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, f in now.items():
        b = f"{100 * before[name]['acc']:.1f}" if before and name in before else "-"
        q = f"{100 * silenced[name]['acc']:.1f}" if silenced and name in silenced else "-"
        lines.append(f"| {name} | {f['n']} | {100 * f['chance']:.1f} | {b} | {100 * f['acc']:.1f} | "
                     f"{100 * f['low']:.1f} | {q} |")

    def near(scores: dict[str, dict[str, float]] | None) -> bool | None:
        # 1e-9: 14 of 120 against 1/6 is 5 points off exactly, which is within them
        return None if scores is None else all(abs(s["acc"] - s["chance"]) <= 0.05 + 1e-9 for s in scores.values())

    top = max(now, key=lambda k: now[k]["acc"])
    checks = [("start: every family within 5 points of chance before", near(before)),
              (f"reach: a family >= 90% after (best: {top}, {100 * now[top]['acc']:.1f}%)", now[top]["acc"] >= 0.90),
              ("others: every other family's 95% low above chance + 5",
               all(s["low"] > s["chance"] + 0.05 for k, s in now.items() if k != top)),
              ("silenced: every family within 5 points of chance", near(silenced))]
    lines.append("")
    lines += [f"- {name}: {'no evaluation' if ok is None else 'met' if ok else 'NOT met'}" for name, ok in checks]
    sampled = fam.get(("before", "sampled"))
    if sampled:  # shown beside the greedy start, not counted: the start the issue names is the evaluation's, greedy
        each = ", ".join(f"{k} {100 * f['acc']:.1f} (chance {100 * f['chance']:.1f})" for k, f in sampled.items())
        lines.append(f"- start sampled at temperature 1 (not counted): every family within 5 points of chance: "
                     f"{'met' if near(sampled) else 'NOT met'}; {each}")
    verdict = all(ok is True for _, ok in checks)  # a missing evaluation (before, silenced) meets nothing
    lines += ["", f"**Acceptance: {'met' if verdict else 'not met'}.** {ACCEPTANCE_RULES}"]
    return "\n".join(lines)


def chance_by_source(evals: dict[str, Path]) -> dict[str, float]:
    """Chance per verl data_source key (synthetic-aqa/<family>/<task>), from any eval folder's items."""
    for folder in evals.values():
        path = folder / "predictions.json"
        if path.exists():
            scores = score_predictions(json.loads(path.read_text(encoding="utf-8")))
            return {f"synthetic-aqa/{k}": v["chance"] for k, v in scores.items() if k != "all"}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", action="append", default=[], help="verl console log (repeatable, in order)")
    parser.add_argument("--eval", action="append", default=[], metavar="LABEL=DIR", help="r1aqa eval folder")
    parser.add_argument("--out", required=True, help="folder for val_accuracy.png, reward.png, summary.md")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    evals = dict(e.split("=", 1) for e in args.eval)
    evals = {k: Path(v) for k, v in evals.items()}
    steps = merge_logs([Path(p).read_text(encoding="utf-8", errors="replace") for p in args.log])
    val = val_series(steps)
    parts = ["# Learning proof: results\n"]
    if steps:
        plot_val(val, out / "val_accuracy.png", chance_by_source(evals))
        plot_reward(steps, out / "reward.png")
        reward = next((series(steps, k) for k in REWARD_KEYS if series(steps, k)), [])
        parts.append(f"GRPO steps logged: {min(steps)}..{max(steps)}"
                     + (f"; mean reward first {reward[0][1]:.3f} (step {reward[0][0]}), last {reward[-1][1]:.3f} "
                        f"(step {reward[-1][0]})" if reward else "") + "\n")
        parts += ["## Validation accuracy (%, greedy) per data_source\n", val_table(val) if val else "(none)", ""]
    if evals:
        parts += ["## Held-out evaluation (r1aqa eval)\n", eval_table(evals), ""]
        parts += ["## Per task family, against issue 8's acceptance\n", acceptance(evals), ""]
        parts += ["## Answers that name no listed choice\n", off_list_table(evals), ""]
        parts += ["## Per label\n", label_table(evals), ""]
    text = "\n".join(parts)
    (out / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
