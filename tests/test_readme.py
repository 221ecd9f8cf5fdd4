"""README promises that must stay true: its Python examples run, and quickstart's CPU branch works as described."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_extension_examples_register_a_dataset_and_a_reward(tmp_path):
    blocks = _python_blocks()
    assert len(blocks) == 2
    csv = tmp_path / "q.csv"
    wav = tmp_path / "a.wav"
    from r1aqa_plugin.audio import encode_wav

    wav.write_bytes(encode_wav([0.1] * 16000))
    csv.write_text(f"question,choices,answer,wav\nWhat?,dog|cat,cat,{wav}\n")
    check = f"""
from r1aqa_plugin.data.records import BuildReport
from r1aqa_plugin.data.registry import get_dataset, iter_dataset
from r1aqa_plugin.rewards.verl_score import compute_score
rows = list(iter_dataset("my-aqa", BuildReport("my-aqa"), csv={str(csv)!r}))
assert len(rows) == 1 and rows[0]["answer"] == "cat", rows
out = compute_score("my-aqa", "<answer>cat</answer>", "cat", {{"choices": ["dog", "cat"]}},
                    rewards={{"r1aqa_accuracy": 1.0, "short_answer": 0.2}})
assert out["short_answer"] == 1.0 and abs(out["score"] - 1.2) < 1e-9, out
print("OK")
"""
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks) + "\n" + check)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.integration
def test_quickstart_cpu_branch_says_what_it_skipped_and_evaluates(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "r1aqa_plugin.cli", "quickstart", "--cpu", "--size", "16",
                           "--out", str(tmp_path / "qs")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "skipped GRPO training: --cpu was given" in proc.stdout
    assert "+recipe=r1aqa_grpo_tiny" in proc.stdout
    assert (tmp_path / "qs" / "eval" / "report.md").exists()
    assert (tmp_path / "qs" / "eval" / "predictions.json").exists()
