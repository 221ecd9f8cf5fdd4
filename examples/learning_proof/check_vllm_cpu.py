"""Check that vLLM (CPU build or GPU) loads a learning-proof checkpoint and answers with audio.

    VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 python examples/learning_proof/check_vllm_cpu.py MODEL_DIR

Prints the prompt token count, the completions for a few synthetic questions, and whether vLLM's greedy
completions equal transformers' (same checkpoint, fp32 on CPU). Exit 1 if vLLM fails to load or generate.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--n", type=int, default=4, help="questions (synthetic-aqa sound, generated here)")
    parser.add_argument("--max-tokens", type=int, default=12)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from r1aqa_plugin.audio import load_audio
    from r1aqa_plugin.data.records import BuildReport
    from r1aqa_plugin.data.synthetic import build_synthetic
    from r1aqa_plugin.eval.backends import HFBackend, Request, SamplingConfig, VLLMBackend
    from r1aqa_plugin.prompts import render_prompt

    rows = list(build_synthetic(BuildReport("synthetic-aqa"), size=args.n, seed=5, tasks="sound"))
    requests = [Request(render_prompt("r1aqa", r["question"], r["choices"]), load_audio(r["audios"][0]))
                for r in rows]
    sampling = SamplingConfig(0.0, 1.0, args.max_tokens, 0)
    on_gpu = __import__("torch").cuda.is_available()
    vllm = VLLMBackend(args.model, sampling, dtype="float32" if not on_gpu else "auto", enforce_eager=not on_gpu,
                       max_model_len=2048)
    got = vllm.generate(requests)
    hf = HFBackend(args.model, sampling, batch_size=args.n, dtype="float32").generate(requests)
    same = sum(a == b for a, b in zip(got, hf))
    for r, a, b in zip(rows, got, hf):
        print(f"[{r['extra_info']['sub_category']}] vllm={a!r} hf={b!r}")
    print(f"vLLM generated {len(got)} completions with audio; {same}/{len(got)} equal to transformers' greedy")
    return 0 if len(got) == len(requests) else 1


if __name__ == "__main__":
    sys.exit(main())
