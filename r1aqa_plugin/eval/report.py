"""The evaluation report: markdown tables (overall, task, difficulty, sub-category; official/lenient/strict)
and a per-task bar chart with the published numbers of the same MMAU version beside ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from statistics import mean, pstdev
from typing import Any

from r1aqa_plugin.eval.published import PUBLISHED
from r1aqa_plugin.eval.robustness import UNRESOLVED, PositionBias, merge_bias
from r1aqa_plugin.eval.scoring import MODES, ModeScores, Scores, Tally, official_text


@dataclass
class EvalRun:
    """One scored pass over the items (the plain run, a shuffled-choices, silenced-audio or sampled run)."""

    label: str
    items: list[dict[str, Any]]
    scores: Scores
    bias: PositionBias | None = None


@dataclass
class ReportContext:
    """What was evaluated and how (printed at the top of the report)."""

    settings: dict[str, str]
    mmau_version: str | None
    shuffled: list[EvalRun] = field(default_factory=list)
    silenced: EvalRun | None = None
    sampled: EvalRun | None = None  # --sample-probe: every question answered once more, sampled


def _pct(t: Tally) -> str:
    return f"{t.percent:.2f}"


def _group_table(title: str, modes: dict[str, ModeScores], attr: str) -> list[str]:
    groups = getattr(modes["official"], attr)
    lines = [f"### {title}", "", "| group | n | official | lenient | strict |", "|---|---:|---:|---:|---:|"]
    for key, tally in groups.items():
        row = " | ".join(_pct(getattr(modes[m], attr)[key]) for m in MODES)
        lines.append(f"| {key} | {tally.total} | {row} |")
    return lines + [""]


def _bias_lines(bias: PositionBias, n_choices_max: int) -> list[str]:
    lines = ["| position of the correct answer | n | accuracy (lenient) |", "|---|---:|---:|"]
    for position, tally in bias.accuracy_by_answer_position.items():
        lines.append(f"| {chr(ord('A') + position)} | {tally.total} | {_pct(tally)} |")
    total = sum(bias.predicted_positions.values())
    keys = [k for k in range(n_choices_max) if k in bias.predicted_positions] + (
        [UNRESOLVED] if UNRESOLVED in bias.predicted_positions else []
    )
    lines += ["", "| predicted position | n | share % |", "|---|---:|---:|"]
    for key in keys:
        label = "names no choice" if key == UNRESOLVED else chr(ord("A") + key)
        count = bias.predicted_positions[key]
        lines.append(f"| {label} | {count} | {100 * count / total:.2f} |")
    return lines


def markdown(ctx: ReportContext, base: EvalRun) -> str:
    """The full markdown report."""
    modes = base.scores.modes
    lines = ["# MMAU-style evaluation", ""]
    lines += [f"- {key}: {value}" for key, value in ctx.settings.items()]
    lines += [f"- items: {base.scores.n_items}", f"- MMAU version: {ctx.mmau_version or 'not MMAU data'}", ""]
    lines += [
        "Modes: **official** = the prediction field scored as MMAU's evaluation.py scores it; **lenient** = R1-AQA's",
        "extraction (first `<answer>` on one line, else the raw output); **strict** = the last `<answer>` body, an",
        "output without one is wrong. Written predictions hold the lenient extraction under `model_output`.",
        "",
        "## Overall",
        "",
        "| mode | Total Accuracy | " + " | ".join(modes["official"].by_task) + " |",
        "|---|---:|" + "---:|" * len(modes["official"].by_task),
    ]
    for mode in MODES:
        tasks = " | ".join(_pct(t) for t in modes[mode].by_task.values())
        lines.append(f"| {mode} | {_pct(modes[mode].total)} | {tasks} |")
    unparseable = f"{base.scores.unparseable} of {base.scores.n_items}"
    lines += ["", f"Unparseable outputs (no complete `<answer>` tag): {unparseable}", ""]
    lines += _group_table("Per task", modes, "by_task")
    lines += _group_table("Per difficulty", modes, "by_difficulty")
    if modes["official"].by_subcategory:
        lines += _group_table("Per sub-category", modes, "by_subcategory")
    if ctx.mmau_version is not None:
        lines += [f"## Published numbers (MMAU {ctx.mmau_version} test-mini)", "",
                  "| system | sound | music | speech | total |", "|---|---:|---:|---:|---:|"]
        for system, numbers in PUBLISHED[ctx.mmau_version].items():
            if numbers is None:
                lines.append(f"| {system} | - | - | - | not published for {ctx.mmau_version} |")
            else:
                lines.append(f"| {system} | {numbers['sound']:.2f} | {numbers['music']:.2f} | "
                             f"{numbers['speech']:.2f} | {numbers['total']:.2f} |")
        lines.append("")
    n_choices_max = max(len(item["choices"]) for item in base.items)
    if base.bias is not None:
        lines += ["## Position bias (choices in dataset order)", ""] + _bias_lines(base.bias, n_choices_max) + [""]
    if ctx.shuffled:
        lenient = [run.scores.modes["lenient"].total.percent for run in ctx.shuffled]
        strict = [run.scores.modes["strict"].total.percent for run in ctx.shuffled]
        lines += [f"## Shuffled choices ({len(ctx.shuffled)} permutation(s))", "",
                  "| run | lenient | strict |", "|---|---:|---:|"]
        lines += [f"| {run.label} | {a:.2f} | {b:.2f} |" for run, a, b in zip(ctx.shuffled, lenient, strict)]
        spread = f"{mean(lenient):.2f} ± {pstdev(lenient):.2f} | {mean(strict):.2f} ± {pstdev(strict):.2f}"
        lines += [f"| mean ± sd | {spread} |",
                  f"| dataset order | {_pct(modes['lenient'].total)} | {_pct(modes['strict'].total)} |", ""]
        merged = merge_bias([run.bias for run in ctx.shuffled if run.bias is not None])
        lines += ["Position bias over all shuffled runs:", ""] + _bias_lines(merged, n_choices_max) + [""]
    if ctx.silenced is not None:
        lines += ["## Silenced audio (zeros of the same length)", "",
                  "| mode | with audio | silenced | needs the audio |",
                  "|---|---:|---:|---:|"]
        for mode in ("lenient", "strict"):
            with_audio = modes[mode].total.percent
            without = ctx.silenced.scores.modes[mode].total.percent
            lines.append(f"| {mode} | {with_audio:.2f} | {without:.2f} | {with_audio - without:+.2f} |")
        lines.append("")
    if ctx.sampled is not None:
        lines += [f"## Sampled ({ctx.sampled.label})", "",
                  "| mode | as evaluated | sampled | difference |", "|---|---:|---:|---:|"]
        for mode in ("lenient", "strict"):
            as_run = modes[mode].total.percent
            sampled = ctx.sampled.scores.modes[mode].total.percent
            lines.append(f"| {mode} | {as_run:.2f} | {sampled:.2f} | {sampled - as_run:+.2f} |")
        lines.append("")
    lines += ["## Official evaluation.py output (official mode)", ""]
    lines += ["```", official_text(modes["official"]), "```", ""]
    return "\n".join(lines)


def plot(path: str | os.PathLike[str], scores: Scores, mmau_version: str | None, label: str = "this model") -> None:
    """Per-task accuracy bars (lenient mode) with the published bars of the same MMAU version beside them."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    lenient = scores.modes["lenient"]
    groups = [task for task, tally in lenient.by_task.items() if tally.total > 0] + ["total"]
    series: list[tuple[str, list[float]]] = [
        (f"{label} (lenient)", [lenient.by_task[g].percent if g != "total" else lenient.total.percent for g in groups])
    ]
    notes = []
    if mmau_version is None:
        notes.append("not MMAU data: no published numbers")
    else:
        for system, numbers in PUBLISHED[mmau_version].items():
            if numbers is None:
                notes.append(f"{system}: no MMAU {mmau_version} number published")
            else:
                series.append((system, [numbers.get(g, float("nan")) for g in groups]))
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(groups), 4.5))
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    title = f"MMAU test-mini {mmau_version}" if mmau_version else "accuracy per task"
    ax.set_title(f"{title} ({scores.n_items} items)")
    ax.legend(fontsize=8, loc="upper left")
    if notes:
        ax.text(0.99, 0.98, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=8, style="italic")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
