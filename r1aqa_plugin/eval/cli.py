"""Generate answers to audio multiple-choice questions and score them with the official MMAU rule.

Generate and score:  r1aqa eval --model CKPT_DIR --data mmau.parquet --out results/
Score a file:        r1aqa eval --predictions predictions.json --out results/

Writes predictions.json (MMAU's own format plus ``model_output``, so MMAU's evaluation.py runs on it
unchanged), report.md (also printed) and accuracy.png into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MMAU_VERSIONS = ("auto", "v1", "v05.15.25", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `r1aqa eval`."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset parquet (r1aqa data build ...) to generate answers for; needs --model")
    source.add_argument("--predictions", help="MMAU-format JSON with model_output (or model_prediction): score only")
    parser.add_argument("--model", help="Qwen2-Audio checkpoint folder (HF format)")
    parser.add_argument("--out", required=True, help="output folder for predictions.json, report.md, accuracy.png")
    parser.add_argument("--backend", choices=["vllm", "hf"], default=None,
                        help="generation backend (default: vllm when importable and a GPU is present, else hf)")
    parser.add_argument("--prompt", default="r1aqa", help="prompt template: r1aqa | r1aqa_think | plain")
    parser.add_argument("--batch-size", type=int, default=8, help="hf backend batch size (default 8)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="default 256 (R1-AQA's)")
    parser.add_argument("--seed", type=int, default=0, help="sampling and choice-shuffle seed")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="model dtype (auto: bf16 on GPU, fp32 on CPU for hf)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85, metavar="F",
                        help="vllm backend on a GPU: fraction of GPU memory vLLM may take (default 0.85; lower it "
                             "when the GPU is shared)")
    parser.add_argument("--kv-cache-gib", type=float, default=None, metavar="G",
                        help="vllm backend on a GPU: a fixed KV cache of G GiB; vLLM then skips its start-up memory "
                             "profile, which fails when another process on the GPU frees memory meanwhile")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions")
    parser.add_argument("--shuffle-choices", type=int, default=0, metavar="N",
                        help="also evaluate N times with each question's choices permuted (position-bias probe)")
    parser.add_argument("--silence-audio", action="store_true",
                        help="also evaluate with every clip replaced by zeros of the same length")
    parser.add_argument("--sample-probe", type=float, default=None, metavar="T",
                        help="also answer every question once sampled at temperature T (top-p 1, the same seed): "
                             "the accuracy of the policy as RL samples it, beside the greedy one")
    parser.add_argument("--mmau-version", choices=MMAU_VERSIONS, default="auto",
                        help="which published numbers to draw (auto: from data_source; none: no published bars)")


def _check(args: argparse.Namespace) -> None:
    if args.data and not args.model:
        raise SystemExit("r1aqa eval: --data needs --model (or score an existing file with --predictions)")
    if args.predictions and (args.shuffle_choices or args.silence_audio or args.sample_probe is not None):
        raise SystemExit("r1aqa eval: --shuffle-choices / --silence-audio / --sample-probe need generation "
                         "(--model and --data)")
    if args.sample_probe is not None and not args.sample_probe > 0:
        raise SystemExit(f"r1aqa eval: --sample-probe {args.sample_probe} must be a temperature > 0")
    if args.shuffle_choices < 0 or args.batch_size < 1 or args.max_new_tokens < 1:
        raise SystemExit("r1aqa eval: --shuffle-choices must be >= 0, --batch-size and --max-new-tokens >= 1")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise SystemExit(f"r1aqa eval: --gpu-memory-utilization {args.gpu_memory_utilization} is not in (0, 1]")
    if args.kv_cache_gib is not None and not args.kv_cache_gib > 0:
        raise SystemExit(f"r1aqa eval: --kv-cache-gib {args.kv_cache_gib} must be > 0")


def _version(args: argparse.Namespace, items: list[dict[str, Any]]) -> str | None:
    from r1aqa_plugin.eval.published import mmau_version

    if args.mmau_version == "none":
        return None
    if args.mmau_version != "auto":
        return args.mmau_version
    return mmau_version(item.get("data_source") for item in items)


def _with_outputs(items: list[dict[str, Any]], raws: list[str]) -> list[dict[str, Any]]:
    from r1aqa_plugin.rewards.answer import extract_lenient

    # model_output holds R1-AQA's extraction, so the official script on this file reports our lenient number.
    return [{**item, "model_output": extract_lenient(raw), "model_output_raw": raw} for item, raw in zip(items, raws)]


def _write_json(path: Path, items: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(items, f, ensure_ascii=False, indent=1)


def run(args: argparse.Namespace) -> int:
    """Run `r1aqa eval`."""
    _check(args)
    from r1aqa_plugin.eval.report import EvalRun, ReportContext, markdown, plot
    from r1aqa_plugin.eval.robustness import position_bias
    from r1aqa_plugin.eval.scoring import RAW_KEY, prediction_of, score_items

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.predictions:
        with open(args.predictions, encoding="utf-8") as f:
            items = json.load(f)
        if not isinstance(items, list):
            raise SystemExit(f"r1aqa eval: {args.predictions} must hold a JSON list of MMAU items")
        items = items[: args.limit] if args.limit else items
        scores = score_items(items)  # raises naming any item without a prediction
        raws = [item.get(RAW_KEY, prediction_of(item)) for item in items]
        base = EvalRun("predictions", items, scores, position_bias(items, raws))
        ctx = ReportContext({"predictions": str(args.predictions)}, _version(args, items))
    else:
        base, ctx = _generate_and_score(args, out)
    _write_json(out / "predictions.json", base.items)
    text = markdown(ctx, base)
    (out / "report.md").write_text(text, encoding="utf-8")
    plot(out / "accuracy.png", base.scores, ctx.mmau_version)
    print(text)
    log.info("wrote %s, %s and %s", out / "predictions.json", out / "report.md", out / "accuracy.png")
    return 0


def _generate_and_score(args: argparse.Namespace, out: Path) -> tuple[Any, Any]:
    from tqdm import tqdm

    from r1aqa_plugin.audio import load_audio
    from r1aqa_plugin.eval.backends import SamplingConfig, default_backend, make_backend
    from r1aqa_plugin.eval.questions import build_requests, load_questions
    from r1aqa_plugin.eval.report import EvalRun, ReportContext
    from r1aqa_plugin.eval.robustness import position_bias, shuffle_choices, silence
    from r1aqa_plugin.eval.scoring import score_items
    from r1aqa_plugin.prompts import render_prompt

    render_prompt(args.prompt, "q", ["a", "b"])  # fail on an unknown template before loading anything
    questions = load_questions(args.data)[: args.limit] if args.limit else load_questions(args.data)
    if not questions:
        raise SystemExit(f"r1aqa eval: {args.data} has no rows")
    items = [q.item for q in questions]
    audios = [load_audio(q.audio) for q in tqdm(questions, desc="load audio", unit="clip")]
    sampling = SamplingConfig(args.temperature, args.top_p, args.max_new_tokens, args.seed)
    backend_name = args.backend or default_backend()
    backend = make_backend(backend_name, args.model, sampling, batch_size=args.batch_size, dtype=args.dtype,
                           gpu_memory_utilization=args.gpu_memory_utilization, kv_cache_gib=args.kv_cache_gib)

    def evaluate(label: str, run_items: list[dict[str, Any]], run_audios: list[Any],
                 run_sampling: SamplingConfig | None = None) -> EvalRun:
        raws = backend.generate(build_requests(run_items, run_audios, args.prompt), run_sampling)
        scored = _with_outputs(run_items, raws)
        return EvalRun(label, scored, score_items(scored), position_bias(run_items, raws))

    base = evaluate("dataset order", items, audios)
    settings = {
        "model": str(args.model), "data": str(args.data), "backend": backend_name, "prompt": args.prompt,
        "sampling": sampling.describe(), "dtype": getattr(backend, "dtype", args.dtype),
    }
    if backend_name == "hf":
        settings["batch size"] = str(args.batch_size)
    ctx = ReportContext(settings, _version(args, items))
    for k in range(args.shuffle_choices):
        seed = args.seed + k + 1
        run = evaluate(f"permutation {k + 1} (seed {seed})", shuffle_choices(items, seed), audios)
        ctx.shuffled.append(run)
        _write_json(out / f"predictions_shuffled_{k + 1}.json", run.items)
    if args.silence_audio:
        ctx.silenced = evaluate("silenced audio", items, [silence(a) for a in audios])
        _write_json(out / "predictions_silenced.json", ctx.silenced.items)
    if args.sample_probe is not None:
        probe = SamplingConfig(args.sample_probe, 1.0, args.max_new_tokens, args.seed)
        ctx.sampled = evaluate(probe.describe(), items, audios, probe)
        _write_json(out / "predictions_sampled.json", ctx.sampled.items)
    return base, ctx


if __name__ == "__main__":  # vLLM's engine core is a spawned process: keep the entry point guarded
    import sys

    from r1aqa_plugin.cli import main

    sys.exit(main(["eval", *sys.argv[1:]]))
