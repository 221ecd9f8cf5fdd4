"""The learning proof's warm-up input pipeline: per-copy feature extraction against one extraction per clip.

    python benchmarks/warmup_features.py --model DIR --data FILE.parquet [--rows 512] [--workers 2 8 16]

The listening warm-up shows every clip twice, once with code words and once with its real options
(examples/learning_proof/warmup.py), and Whisper's log-mel of a clip padded to 30 s costs as much each time. This
encodes the same rows, side by side in one process, the way `warmup.py` did up to 2026-11-29 (each copy through
the processor, each extracting its clip's features) and the way it does now (`ClipFeatures`: every clip extracted
once, up front, on N threads, then each copy through the processor). It prints seconds, ms per row copy and the
speed-up, and checks that both give the same tensors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "learning_proof"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a Qwen2-Audio checkpoint folder (its processor is used)")
    ap.add_argument("--data", required=True, help="an AQA parquet (synthetic-aqa works)")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)

    import torch
    import warmup
    from code_words import code_map, encode_row
    from transformers import AutoProcessor

    rows = warmup.load_rows(args.data, args.rows)
    codes = code_map()
    target = [warmup.ANSWER.format("x")]

    def copies() -> list[dict]:  # the two copies of each row the listening warm-up draws, sharing the clip
        out = []
        for i, r in enumerate(rows):
            choices, answer = encode_row(r["choices"], r["answer"], codes, f"row {i}")
            out += [{**r}, {"question": r["question"], "choices": choices, "answer": answer, "audio": r["audio"]}]
        return out

    def encode_all(processor, batch: list[dict]) -> list[dict]:
        return [warmup.encode_batch(processor, [r], target) for r in batch]

    table = []
    processor = AutoProcessor.from_pretrained(args.model)
    t0 = time.perf_counter()
    base = encode_all(processor, copies())
    base_s = time.perf_counter() - t0
    table.append(("each copy extracts its clip (up to 2026-11-29)", "-", base_s, len(base)))
    for workers in args.workers:
        processor = AutoProcessor.from_pretrained(args.model)
        features = warmup.remember_clip_features(processor, len(rows))
        batch = copies()
        t0 = time.perf_counter()
        warmup.encode_batch(processor, batch[:1], target)
        features.prefill([r["audio"] for r in rows], workers)
        got = encode_all(processor, batch)
        seconds = time.perf_counter() - t0
        same = all(torch.equal(a[k], b[k]) for a, b in zip(base, got) for k in a)
        if not same:
            raise SystemExit(f"{workers} threads: the encoded tensors differ from the per-copy path")
        table.append((f"each clip once, up front ({features.extracted} extractions)", str(workers), seconds, len(got)))

    print(f"{len(rows)} rows x 2 copies; torch threads {torch.get_num_threads()}; tensors equal across paths\n")
    print("| path | threads | seconds | ms per row copy | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for name, workers, seconds, n in table:
        print(f"| {name} | {workers} | {seconds:.2f} | {1000 * seconds / n:.2f} | {base_s / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
