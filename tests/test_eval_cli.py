"""`r1aqa eval` end to end: scoring a predictions file, generating with the tiny model (HF; vLLM's CPU build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from r1aqa_plugin.cli import main
from r1aqa_plugin.eval.scoring import MissingPredictionError

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
REPO = Path(__file__).resolve().parents[1]


def test_scoring_a_predictions_file_writes_predictions_report_and_chart(tmp_path, capsys):
    assert main(["eval", "--predictions", str(FIXTURES / "mmau_predictions.json"), "--out", str(tmp_path),
                 "--mmau-version", "v1"]) == 0
    printed = capsys.readouterr().out
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert printed.strip() == report.strip()
    assert "| official | 58.33 | 75.00 | 33.33 | 60.00 |" in report
    assert "| lenient | 66.67 | 75.00 | 66.67 | 60.00 |" in report
    assert "| strict | 58.33 | 50.00 | 66.67 | 60.00 |" in report
    assert "Unparseable outputs (no complete `<answer>` tag): 3 of 12" in report
    assert "| R1-AQA (GRPO) | 69.37 | 66.77 | 57.36 | 64.50 |" in report
    assert (FIXTURES / "mmau_predictions_official.txt").read_text(encoding="utf-8").strip() in report
    written = json.loads((tmp_path / "predictions.json").read_text(encoding="utf-8"))
    assert written == json.loads((FIXTURES / "mmau_predictions.json").read_text(encoding="utf-8"))
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_v05_15_25_report_says_r1aqa_has_no_number_for_that_version(tmp_path):
    main(["eval", "--predictions", str(FIXTURES / "mmau_predictions.json"), "--out", str(tmp_path),
          "--mmau-version", "v05.15.25"])
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| Qwen2-Audio-Instruct (leaderboard) | 67.27 | 56.29 | 55.26 | 59.60 |" in report
    assert "| R1-AQA (GRPO) | - | - | - | not published for v05.15.25 |" in report


def test_a_predictions_file_with_a_missing_prediction_is_a_clear_error(tmp_path):
    items = json.loads((FIXTURES / "mmau_predictions.json").read_text(encoding="utf-8"))
    del items[4]["model_output"]
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    with pytest.raises(MissingPredictionError, match="1 of 12 items have no prediction .*: fx-05"):
        main(["eval", "--predictions", str(path), "--out", str(tmp_path / "out")])


def test_a_gpu_memory_fraction_outside_0_1_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"--gpu-memory-utilization 1.5 is not in \(0, 1\]"):
        main(["eval", "--model", "m", "--data", "x.parquet", "--out", str(tmp_path), "--gpu-memory-utilization", "1.5"])


def test_a_non_positive_kv_cache_size_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"--kv-cache-gib 0.0 must be > 0"):
        main(["eval", "--model", "m", "--data", "x.parquet", "--out", str(tmp_path), "--kv-cache-gib", "0"])


def test_vllm_gets_a_fixed_kv_cache_only_when_asked():
    from r1aqa_plugin.eval.backends import VLLMBackend

    assert VLLMBackend.gpu_memory_kwargs(0.3, None) == {"gpu_memory_utilization": 0.3}
    assert VLLMBackend.gpu_memory_kwargs(0.1, 1.5) == {"gpu_memory_utilization": 0.1,
                                                       "kv_cache_memory_bytes": 1536 * 2**20}


def test_generation_options_without_a_model_are_refused_before_anything_loads(tmp_path):
    with pytest.raises(SystemExit, match="--data needs --model"):
        main(["eval", "--data", "x.parquet", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="need generation"):
        main(["eval", "--predictions", str(FIXTURES / "mmau_predictions.json"), "--out", str(tmp_path),
              "--silence-audio"])
    with pytest.raises(SystemExit, match="need generation"):
        main(["eval", "--predictions", str(FIXTURES / "mmau_predictions.json"), "--out", str(tmp_path),
              "--sample-probe", "1"])
    with pytest.raises(SystemExit, match="--sample-probe 0.0 must be a temperature > 0"):
        main(["eval", "--model", "m", "--data", "x.parquet", "--out", str(tmp_path), "--sample-probe", "0"])


@pytest.fixture(scope="module")
def synthetic_parquet(tmp_path_factory) -> Path:
    """Four synthetic-aqa rows (generated audio, no download)."""
    path = tmp_path_factory.mktemp("data") / "synthetic.parquet"
    assert main(["data", "build", "synthetic-aqa", "--size", "4", "--out", str(path)]) == 0
    return path


def _raw_outputs(out: Path, name: str = "predictions.json") -> list[str]:
    return [item["model_output_raw"] for item in json.loads((out / name).read_text(encoding="utf-8"))]


def test_eval_generates_with_the_hf_backend_on_the_tiny_model_and_runs_both_probes(tiny_model_dir, synthetic_parquet,
                                                                                    tmp_path):
    out = tmp_path / "hf"
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(synthetic_parquet), "--out", str(out),
                 "--backend", "hf", "--batch-size", "3", "--max-new-tokens", "6", "--shuffle-choices", "1",
                 "--silence-audio", "--sample-probe", "1.0"]) == 0
    items = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert len(items) == 4 and all(isinstance(i["model_output"], str) and i["model_output_raw"] for i in items)
    report = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## Overall", "### Per task", "### Per difficulty", "### Per sub-category",
                    "## Shuffled choices (1 permutation(s))", "## Silenced audio", "- backend: hf", "- prompt: r1aqa",
                    "greedy, max_new_tokens=6", "MMAU version: not MMAU data",
                    "## Sampled (sampling T=1.0 top_p=1.0 seed=0, max_new_tokens=6)", "| mode | as evaluated | sampled |"):
        assert heading in report
    shuffled = json.loads((out / "predictions_shuffled_1.json").read_text(encoding="utf-8"))
    assert [sorted(a["choices"]) for a in shuffled] == [sorted(b["choices"]) for b in items]
    # Greedy decoding is deterministic, and batching (left padding) must not change an answer.
    again = tmp_path / "hf-batch1"
    main(["eval", "--model", str(tiny_model_dir), "--data", str(synthetic_parquet), "--out", str(again),
          "--backend", "hf", "--batch-size", "1", "--max-new-tokens", "6"])
    assert _raw_outputs(again) == _raw_outputs(out)
    # Silence must reach the model: zeros change at least one greedy answer of a random model.
    assert _raw_outputs(out, "predictions_silenced.json") != _raw_outputs(out)
    # The sample probe samples (a random model's answers at temperature 1 differ from its greedy ones) and
    # leaves the greedy run as it was.
    assert _raw_outputs(out, "predictions_sampled.json") != _raw_outputs(out)
    assert len(_raw_outputs(out, "predictions_sampled.json")) == len(items)


@pytest.mark.integration
@pytest.mark.slow
def test_eval_generates_with_vllms_cpu_build_and_agrees_with_hf_greedy_outputs(tiny_model_dir, synthetic_parquet,
                                                                              tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "vllm"
    # vLLM spawns an engine-core process: run it as its own program, not inside pytest's process.
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "r1aqa_plugin.eval.cli", "--model", str(tiny_model_dir), "--data",
         str(synthetic_parquet), "--out", str(out), "--backend", "vllm", "--dtype", "bfloat16",
         "--max-new-tokens", "6", "--sample-probe", "1.0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "## Overall" in done.stdout and "## Sampled (sampling T=1.0" in done.stdout
    # the probe's call samples; the engine's own greedy setting is untouched (checked against hf below)
    assert _raw_outputs(out, "predictions_sampled.json") != _raw_outputs(out)
    hf = tmp_path / "hf"
    main(["eval", "--model", str(tiny_model_dir), "--data", str(synthetic_parquet), "--out", str(hf),
          "--backend", "hf", "--max-new-tokens", "6"])
    vllm_raw, hf_raw = _raw_outputs(out), _raw_outputs(hf)
    # Same prompt and audio reach both engines: greedy outputs start the same (bf16 vs fp32 may split later).
    same_start = sum(a[:3] == b[:3] for a, b in zip(vllm_raw, hf_raw))
    assert same_start >= len(hf_raw) - 1, (vllm_raw, hf_raw)


@pytest.mark.integration
@pytest.mark.slow
def test_vllm_samples_each_question_with_its_own_random_numbers(tiny_model_dir, synthetic_parquet, tmp_path):
    # eight copies of one question: greedy gives eight equal answers, sampling eight draws. With a per-request seed
    # vLLM started every request's generator from the same seed, and the eight samples were one.
    pytest.importorskip("vllm")
    import pandas as pd

    row = pd.read_parquet(synthetic_parquet).iloc[:1]
    same = pd.concat([row] * 8, ignore_index=True)
    same["extra_info"] = [{**row["extra_info"].iloc[0], "id": f"copy-{i}", "index": i} for i in range(8)]
    data = tmp_path / "same.parquet"
    same.to_parquet(data)
    out = tmp_path / "vllm"
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "r1aqa_plugin.eval.cli", "--model", str(tiny_model_dir), "--data", str(data),
         "--out", str(out), "--backend", "vllm", "--dtype", "bfloat16", "--max-new-tokens", "6",
         "--sample-probe", "1.0", "--mmau-version", "none"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert len(set(_raw_outputs(out))) == 1
    sampled = _raw_outputs(out, "predictions_sampled.json")
    assert len(sampled) == 8 and len(set(sampled)) > 4, sampled
