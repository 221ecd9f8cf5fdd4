"""Format warm-up: teach a Qwen2-Audio checkpoint the answer FORMAT, not the answer (issue 8, phase 1).

Supervised fine-tuning on synthetic-aqa prompts rendered exactly as AQADataset renders them for verl (R1-AQA's
answer-only prompt in Qwen2-Audio's chat template, the audio item first, the assistant turn opened), with the
target ``<answer>{a RANDOM choice}</answer><|im_end|>``: a fresh uniform draw among the listed choices at every
step, so the model learns the tags, the choice vocabulary and to stop, while the audio carries no information
about the target (accuracy stays at chance). The listed choices are drawn from the task's options apart from the
answer (``decouple_choices``): a question's own list always includes the answer, which makes the answer the likeliest
random target given the audio (``--own-choices`` keeps the old way). Loss on the target tokens only. The audio tower is
frozen by default (it is not what the warm-up is about; the real Whisper weights stay as they are).

With ``--listen-share F`` (the listening warm-up, run after the format warm-up) a share F of each batch is shown in
code words (code_words.py: every option renamed by a fixed arbitrary map) with the CORRECT code as target, the rest
as above: the model learns to read the audio, while no real option's words are tied to a sound. The log then splits
the loss into ``code_loss`` and ``name_loss``.

    python examples/learning_proof/warmup.py --model small --data train.parquet --out small-warm \
        --steps 300 --batch-size 16 --lr 3e-4 --seed 0

Plain torch (AdamW, linear warm-up then cosine), CPU or CUDA (bf16 autocast on CUDA, fp32 master weights).
The checkpoint is saved in bf16 under Qwen2-Audio's ORIGINAL weight names (builder.save_original_weights) with
the input folder's config, processor, tokenizer and generation config, so verl and vLLM load it. A JSON-lines
log of the loss goes to OUT/warmup_log.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # code_words, beside this script

ANSWER = "<answer>{}</answer>"
# Everything the builder writes besides the weights (copied from the input checkpoint).
NON_WEIGHT_FILES = ("config.json", "generation_config.json", "processor_config.json", "preprocessor_config.json",
                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                    "chat_template.json", "added_tokens.json", "vocab.json", "merges.txt", "WHISPER_INIT.txt")


def load_rows(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of an AQA parquet: prompt fields, answer, id, task (sub-category), data_source and the 16 kHz clip."""
    import pandas as pd

    from r1aqa_plugin.audio import load_audio

    df = pd.read_parquet(path)
    if limit:
        df = df.iloc[:limit]
    rows = []
    for rec in df.to_dict("records"):
        audios = list(rec["audios"])
        if len(audios) != 1:
            raise ValueError(f"{path}: row {rec['extra_info']['id']} has {len(audios)} audio items, expected 1")
        info = rec["extra_info"]
        rows.append({"id": info["id"], "task": info.get("sub_category") or rec["data_source"],
                     "question": rec["question"], "choices": [str(c) for c in rec["choices"]],
                     "answer": rec["answer"], "data_source": rec["data_source"], "audio": load_audio(audios[0])})
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def prompt_text(processor: Any, question: str, choices: list[str], template: str = "r1aqa") -> str:
    """The chat prompt AQADataset gives verl: template rendered, one audio item first, assistant turn opened."""
    from r1aqa_plugin.eval.backends import chat_prompt
    from r1aqa_plugin.prompts import render_prompt

    return chat_prompt(processor, render_prompt(template, question, choices))


class ClipFeatures:
    """The processor's feature extractor, remembering each clip's features.

    A row's code-word copy and its real-option copy share one clip (``code_rows``), and every clip is padded to
    Whisper's 30 s before its log-mel, so extracting it again costs as much as the first time. The tenth GPU run's
    listening warm-up spent its first 800 steps at ~0.23 s a step and the rest at ~0.075: the extraction, not the
    model, was half of its 277 s. Remembered per clip, it runs once per clip, and both copies share one tensor.

    The plugin's OnceCache holds them, as it does for VerlQwen2AudioProcessor's per-clip features in verl's
    rollouts. That processor's cache keeps the last 64 clips; the warm-up meets a row's two copies far apart, so it
    keeps every clip here (``clips``), keyed by the array itself, and runs the stock processor as AQADataset does.
    """

    def __init__(self, extractor: Any, clips: int) -> None:
        from r1aqa_plugin.once_cache import OnceCache

        self.extractor = extractor
        # value (clip, features): the clip held there means no other array can take its id while it is cached
        self._cache: OnceCache[tuple[Any, dict[str, Any]]] = OnceCache(clips)
        self._kwargs: dict[str, Any] | None = None  # what the processor passes: learned from its first call

    @property
    def extracted(self) -> int:
        """How many clips' features this has extracted."""
        return self._cache.misses

    def __getattr__(self, name: str) -> Any:  # sampling_rate, feature_size, ...: the extractor's
        if name == "extractor":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.extractor, name)

    def _features(self, clip: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        key = (id(clip), tuple(sorted(kwargs.items())))
        return self._cache.get(key, lambda: (clip, dict(self.extractor(clip, **kwargs))))[1]

    def __call__(self, audio: Any, **kwargs: Any) -> Any:
        from transformers.feature_extraction_utils import BatchFeature

        clips = [audio] if isinstance(audio, np.ndarray) else list(audio)
        if len(clips) != 1:
            return self.extractor(audio, **kwargs)
        self._kwargs = dict(kwargs)
        # a fresh BatchFeature each time: the processor pops and renames its keys
        return BatchFeature(dict(self._features(clips[0], kwargs)))

    def prefill(self, clips: list[Any], workers: int) -> int:
        """Extract the features of every clip not yet remembered, ``workers`` at a time (threads: the log-mel is
        torch and numpy work that releases the GIL); returns how many. Needs one call through the processor first,
        which is where the arguments come from."""
        from concurrent.futures import ThreadPoolExecutor

        import torch

        if self._kwargs is None:
            raise RuntimeError("ClipFeatures.prefill: no call through the processor yet, so its arguments are unknown")
        kwargs, before, threads = self._kwargs, self.extracted, torch.get_num_threads()
        if workers > 1:  # one intra-op thread per worker: N workers x N torch threads would oversubscribe the cores
            torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max(1, workers)) as pool:
                list(pool.map(lambda clip: self._features(clip, kwargs), clips))
        finally:
            torch.set_num_threads(threads)
        return self.extracted - before


def remember_clip_features(processor: Any, clips: int) -> ClipFeatures:
    """Give ``processor`` a feature extractor that extracts each of up to ``clips`` clips once (see ClipFeatures);
    returns it (the one already there, if the processor has one)."""
    if not isinstance(processor.feature_extractor, ClipFeatures):
        processor.feature_extractor = ClipFeatures(processor.feature_extractor, clips)
    return processor.feature_extractor


def encode_batch(processor: Any, rows: list[dict[str, Any]], targets: list[str], template: str = "r1aqa"
                 ) -> dict[str, Any]:
    """Right-padded input_ids / attention_mask / labels (-100 off the target) plus Whisper features."""
    import torch

    tok = processor.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id
    seqs, labels, feats, fmask = [], [], [], []
    for row, target in zip(rows, targets):
        # The prompt and its Whisper features do not depend on the target: computed once per row (the processor,
        # not the model, dominated a warm-up step on a busy host).
        enc = row.get("_encoded")
        if enc is None:
            text = prompt_text(processor, row["question"], row["choices"], template)
            enc = row["_encoded"] = processor(text=[text], audio=[row["audio"]], sampling_rate=16000,
                                              return_tensors="pt")
        prompt_ids = enc["input_ids"][0].tolist()  # <|AUDIO|> already expanded to the clip's length
        target_ids = tok(target, add_special_tokens=False)["input_ids"] + [im_end]
        seqs.append(prompt_ids + target_ids)
        labels.append([-100] * len(prompt_ids) + target_ids)
        feats.append(enc["input_features"][0])
        fmask.append(enc["feature_attention_mask"][0])
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(l)] = torch.tensor(l)
        att[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": att, "labels": lab,
            "input_features": torch.stack(feats), "feature_attention_mask": torch.stack(fmask)}


def code_rows(rows: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """Each row with its options renamed to code words (code_words.py); the clip is shared, not copied."""
    from code_words import code_map, encode_row

    codes = code_map()
    out = []
    for i, r in enumerate(rows):
        choices, answer = encode_row(r["choices"], r["answer"], codes, f"{path} row {i}")
        out.append({"question": r["question"], "choices": choices, "answer": answer, "audio": r["audio"]})
    return out


def draw_batches(code_pool: list[int], n_rows: int, n_code: int, n_name: int,
                 rng: Any) -> Iterator[tuple[list[int], list[int]]]:
    """Endless batches: ``n_code`` row indices from ``code_pool`` (shown in code words) and ``n_name`` from all
    ``n_rows`` (shown with their real options), each stream going through its rows in fresh shuffles."""
    code_order: list[int] = []
    name_order: list[int] = []
    while True:
        while len(code_order) < n_code:
            code_order += [code_pool[j] for j in rng.permutation(len(code_pool))]
        while len(name_order) < n_name:
            name_order += rng.permutation(n_rows).tolist()
        yield code_order[:n_code], name_order[:n_name]
        code_order, name_order = code_order[n_code:], name_order[n_name:]


def decouple_choices(rows: list[dict[str, Any]], rng: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Copies of the rows whose listed choices are a uniform draw from their task's options, independent of the
    answer (which may then be missing); and how many rows of each task kept their own list (no known option set).

    Why: with a random target among a question's OWN choices, which always include the answer, the answer is the
    most likely target given the audio (beep count: 1/4 against 3/16 for each other count; instrument: 1/4
    against 3/20). A model that listens can learn that lean, and did: after the listening warm-up the real options
    started at 35-41% where chance is 25% (docs/learning.md, fifth GPU run). Drawn this way, every option is the
    target 1/K of the time whatever the audio, and the listed choices say nothing about the answer either.
    """
    import r1aqa_plugin.data.synthetic  # noqa: F401  (registers the tasks)
    from r1aqa_plugin.data.synthetic.tasks import TASKS

    out, kept = [], {}
    for r in rows:
        task = TASKS.get(r["task"])
        if task is None or not set(r["choices"]) <= set(task.options):
            kept[r["task"]] = kept.get(r["task"], 0) + 1
            out.append(r)
            continue
        picked = [task.options[j] for j in rng.permutation(len(task.options))[: len(r["choices"])]]
        out.append({**r, "choices": picked, "_encoded": None})
    return out, kept


def pick_targets(rows: list[dict[str, Any]], mode: str, rng: Any, lean: float = 0.0) -> list[str]:
    """Each row's target: a fresh uniform choice ("random", the warm-up) or its answer ("correct", the probe).

    ``lean``: the share of random targets that go to the alphabetically first listed choice instead. Why: a model
    that does not hear has a near-uniform answer, and greedy decoding picks its largest tiny logit. After a long
    listening warm-up those tiny differences follow the audio in arbitrary ways: the eleventh GPU run's start
    scored 0.0% and 12.5% on beep count (chance 20%) with the audio, 20.0% silenced. The lean is one fixed,
    audio-independent preference, larger than those differences, so greedy answers one choice whatever the audio,
    and every listed option, the answer among them, stays a possible sample for GRPO.
    """
    if mode == "correct":
        return [ANSWER.format(r["answer"]) for r in rows]
    if mode == "random":
        # rng.random() only when leaning: lean 0 draws exactly the targets of the runs before it
        return [ANSWER.format(min(r["choices"]) if lean and rng.random() < lean
                              else r["choices"][rng.integers(len(r["choices"]))]) for r in rows]
    raise ValueError(f"targets must be 'random' or 'correct', not {mode!r}")


def token_losses(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Cross-entropy of every target token and the batch row it belongs to (the LM head runs on targets only)."""
    import torch.nn.functional as F

    inner = getattr(model, "model", None)
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    pos = labels[:, 1:] != -100
    row = pos.nonzero()[:, 0]
    if inner is not None and hasattr(model, "lm_head"):  # transformers 5: model.model -> hidden states
        logits = model.lm_head(inner(**inputs).last_hidden_state[:, :-1][pos])
    else:
        logits = model(**inputs).logits[:, :-1][pos]
    return F.cross_entropy(logits.float(), labels[:, 1:][pos], reduction="none"), row


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak``, then cosine to 10% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def save_checkpoint(model: Any, src: Path, out: Path) -> None:
    """bf16 weights under the original names + the source folder's non-weight files."""
    import torch

    from r1aqa_plugin.models.qwen2_audio.builder import save_original_weights

    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    for name in NON_WEIGHT_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, out / name)
    model.to(torch.bfloat16)
    save_original_weights(model, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="input Qwen2-Audio checkpoint folder")
    parser.add_argument("--data", required=True, help="synthetic-aqa (or any AQA) parquet")
    parser.add_argument("--out", required=True, help="output checkpoint folder")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0, help="batch order and random-answer seed")
    parser.add_argument("--limit", type=int, default=None, help="use the first N rows only")
    parser.add_argument("--prompt", default="r1aqa", help="prompt template (as data.r1aqa.prompt_template)")
    parser.add_argument("--train-audio", action="store_true", help="also train the audio tower (default frozen)")
    parser.add_argument("--targets", choices=("random", "correct"), default="random",
                        help="random: the format warm-up; correct: a supervised probe of how fast the model CAN "
                             "learn the audio -> answer mapping at this lr (the loss falls below chance only then)")
    parser.add_argument("--listen-share", type=float, default=0.0,
                        help="share of each batch shown as code-word rows (code_words.py) with the CORRECT code "
                             "as target: teaches listening without tying any real option to the audio")
    parser.add_argument("--code-tasks", default="",
                        help="comma list of tasks whose rows may be shown in code words (default: every task); the "
                             "real-option rows still come from every task, so each task keeps its answer format")
    parser.add_argument("--own-choices", action="store_true",
                        help="random targets among each question's own choices (which always list the answer; "
                             "the runs up to 2026-11-29). Default: the listed choices are drawn from the task's "
                             "options independently of the answer, so a random target says nothing about the audio")
    parser.add_argument("--lean", type=float, default=0.0,
                        help="share of random targets given to the alphabetically first listed choice: one fixed, "
                             "audio-independent preference, so a model that does not hear answers one choice "
                             "greedily whatever the audio (pick_targets; docs/learning.md, eleventh run)")
    parser.add_argument("--feature-workers", type=int, default=min(16, len(os.sched_getaffinity(0))),
                        help="threads extracting every clip's log-mel features before the first step "
                             "(default: this process's cores, at most 16)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from r1aqa_plugin.models.qwen2_audio.whisper_init import audio_tower_of

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    src, out = Path(args.model), Path(args.out)
    processor = AutoProcessor.from_pretrained(src)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(src, dtype=torch.float32).to(device)
    model.train()
    if not args.train_audio:
        audio_tower_of(model).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    rows = load_rows(args.data, args.limit)
    features = remember_clip_features(processor, len(rows))  # the code-word copies share their rows' clips
    if not 0.0 <= args.listen_share <= 1.0:
        parser.error(f"--listen-share must be within [0, 1], got {args.listen_share}")
    if not 0.0 <= args.lean < 1.0:
        parser.error(f"--lean must be within [0, 1), got {args.lean}")
    n_code = round(args.listen_share * args.batch_size)
    coded = code_rows(rows, args.data) if n_code else []
    code_tasks = {t for t in args.code_tasks.split(",") if t}
    code_pool = [i for i, r in enumerate(rows) if not code_tasks or r["task"] in code_tasks]
    if n_code and not code_pool:
        parser.error(f"--code-tasks {args.code_tasks}: no row of {args.data} has one of these tasks "
                     f"(its tasks: {', '.join(sorted({r['task'] for r in rows}))})")
    rng = np.random.default_rng(args.seed)
    named = rows
    if args.targets == "random" and not args.own_choices:
        named, kept = decouple_choices(rows, np.random.default_rng([args.seed, 1]))
        if kept:
            print(f"[warmup] choices kept as listed (no synthetic option set) for {sum(kept.values())} rows: "
                  + ", ".join(f"{t} {n}" for t, n in sorted(kept.items())), flush=True)
    print(f"[warmup] {len(rows)} rows, {n_train / 1e6:.1f}M trainable parameters, device {device}, "
          f"{args.steps} steps x {args.batch_size} ({n_code} code-word rows with correct codes"
          f"{' of ' + args.code_tasks if code_tasks else ''}), lr {args.lr}, "
          f"{args.targets} targets"
          f"{' among choices drawn apart from the answer' if named is not rows else ''}"
          f"{f', {args.lean:.0%} of them the alphabetically first choice' if args.lean else ''}", flush=True)

    log = (out.parent / (out.name + "_warmup_log.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)
    batches = draw_batches(code_pool, len(rows), n_code, args.batch_size - n_code, rng)
    t0 = time.perf_counter()  # every clip's features up front, the processor's first call giving the arguments
    encode_batch(processor, rows[:1], [ANSWER.format(rows[0]["choices"][0])], args.prompt)
    features.prefill([r["audio"] for r in rows], args.feature_workers)
    print(f"[warmup] features of {features.extracted} clips extracted in {time.perf_counter() - t0:.1f} s "
          f"({args.feature_workers} threads)", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        for step in range(args.steps):
            code_idx, name_idx = next(batches)
            batch_rows = [coded[i] for i in code_idx] + [named[i] for i in name_idx]
            targets = (pick_targets(batch_rows[:n_code], "correct", rng)
                       + pick_targets(batch_rows[n_code:], args.targets, rng, args.lean))
            batch = {k: v.to(device) for k, v in encode_batch(processor, batch_rows, targets, args.prompt).items()}
            for group in opt.param_groups:
                group["lr"] = lr_at(step, args.steps, args.lr, args.warmup_steps)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                per_token, row = token_losses(model, batch)
            loss = per_token.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            rec = {"step": step + 1, "loss": round(loss.item(), 4), "grad_norm": round(float(gnorm), 3),
                   "lr": opt.param_groups[0]["lr"], "s": round(time.perf_counter() - start, 1)}
            if n_code:  # the two halves apart: the code rows' loss falls below chance only if the model listens
                is_code = row < n_code
                rec["code_loss"] = round(per_token[is_code].mean().item(), 4)
                if n_code < args.batch_size:
                    rec["name_loss"] = round(per_token[~is_code].mean().item(), 4)
            f.write(json.dumps(rec) + "\n")
            if (step + 1) % args.log_every == 0 or step == 0 or step + 1 == args.steps:
                parts = "".join(f" {k} {rec[k]:.4f}" for k in ("code_loss", "name_loss") if k in rec)
                print(f"[warmup] step {rec['step']}/{args.steps} loss {rec['loss']:.4f}{parts} "
                      f"grad_norm {rec['grad_norm']:.2f} lr {rec['lr']:.2e} {rec['s']:.0f} s", flush=True)
    model.eval()
    save_checkpoint(model, src, out)
    print(f"[warmup] wrote {out} in {time.perf_counter() - start:.0f} s ({features.extracted} clips' features "
          f"extracted); log {log}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
