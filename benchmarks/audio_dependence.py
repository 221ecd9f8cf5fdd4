"""How much a Qwen2-Audio's log-probs depend on its audio, against bf16 noise (CPU; predicts the GPU contrast test).

    python benchmarks/audio_dependence.py --model DIR --data FILE.parquet [--rows 16] [--tokens 20] [--wrong other]

tests/test_gpu_grpo.py asks verl's rollout-vs-actor gap (`rollout_corr/log_ppl_abs_diff`: mean over sequences of
|mean token log-prob, rollout - actor|) to grow >= 10x when the actor hears another sample's audio. This script
measures the same quantity with transformers alone: responses sampled from the model with their own audio, then
scored (a) in fp32 with the same audio (the actor), (b) in bf16 with the same audio (a stand-in for vLLM's bf16
numerics), (c) in fp32 with the wrong audio (`R1AQA_DIAG_ACTOR_AUDIO` semantics). It prints |b - a| (the noise
floor), |b - c| (what the GPU test's wrong-audio run sees) and their ratio, plus token-level mean |diff|.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "learning_proof"))


def response_logprobs(model, enc, response: list[int], dtype: str) -> np.ndarray:
    """Per-token log-probs of ``response`` after the processor output ``enc`` (prompt + audio), run in ``dtype``."""
    import torch

    ids = torch.cat([enc["input_ids"], torch.tensor([response])], dim=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=enc["input_features"],
                       feature_attention_mask=enc["feature_attention_mask"]).logits
    logp = torch.log_softmax(logits[0, -len(response) - 1 : -1].float(), dim=-1)
    return logp[torch.arange(len(response)), torch.tensor(response)].numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="an AQA parquet (synthetic-aqa works)")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=20, help="new tokens sampled per response")
    ap.add_argument("--wrong", choices=["other", "reverse"], default="other")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
    from warmup import load_rows, prompt_text

    from r1aqa_plugin.models.qwen2_audio.processor import diagnostic_audio

    torch.manual_seed(a.seed)
    processor = AutoProcessor.from_pretrained(a.model)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(a.model, dtype=torch.float32).eval()
    rows = load_rows(a.data, a.rows)
    # Seen in this order, row 0's "other" clip is the last row's and every later row's is the row before it.
    wrong_audio = [diagnostic_audio(r["audio"], a.wrong) for r in [rows[-1], *rows]][1:]
    seq, tok = {"noise": [], "wrong": []}, {"noise": [], "wrong": []}
    for row, wrong in zip(rows, wrong_audio):
        prompt = prompt_text(processor, row["question"], row["choices"])
        enc = processor(text=[prompt], audio=[row["audio"]], sampling_rate=16000, return_tensors="pt")
        enc_wrong = processor(text=[prompt], audio=[wrong], sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=a.tokens, do_sample=True, temperature=1.0, top_k=0)
        response = out[0, enc["input_ids"].shape[1] :].tolist()
        actor = response_logprobs(model, enc, response, "fp32")
        rollout = response_logprobs(model, enc, response, "bf16")
        wrong_actor = response_logprobs(model, enc_wrong, response, "fp32")
        for key, other in (("noise", actor), ("wrong", wrong_actor)):
            seq[key].append(abs(rollout.mean() - other.mean()))
            tok[key].append(np.abs(rollout - other).mean())
    noise, wrong = float(np.mean(seq["noise"])), float(np.mean(seq["wrong"]))
    print(f"{a.model}: {len(rows)} responses of <= {a.tokens} tokens, wrong audio = {a.wrong}")
    print("| comparison | abs log-ppl diff (verl's metric) | token mean abs diff |")
    print("|---|---:|---:|")
    print(f"| bf16 vs fp32, same audio (noise floor) | {noise:.3g} | {np.mean(tok['noise']):.3g} |")
    print(f"| bf16 same audio vs fp32 wrong audio | {wrong:.3g} | {np.mean(tok['wrong']):.3g} |")
    print(f"ratio {wrong / noise:.1f}x (the GPU test asks >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
