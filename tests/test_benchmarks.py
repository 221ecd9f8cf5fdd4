"""The performance benchmark suite (issue 7) on CPU: the floor model, verl's log parser, and toy rollout runs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import floor  # noqa: E402
import grpo_step_bench as gsb  # noqa: E402
import host_memory  # noqa: E402

# verl 0.9.1's console line as it came back from the H200 (tiny run, Ray prefix and colours kept), shortened
LOG = (
    "\x1b[36m(TaskRunnerV1 pid=1804)\x1b[0m step:1 - actor/entropy:11.87 - actor/perf/max_memory_allocated_gb:4.77 - "
    "prompt_length/mean:170.25 - response_length/mean:32.0 - num_turns/min:np.int32(2) - timing_s/gen:10.26 - "
    "timing_s/old_log_prob:1.59 - timing_s/ref:1.35 - timing_s/update_actor:1.69 - timing_s/update_weights:0.55 - "
    "timing_s/step:38.1 - perf/throughput:170.0\n"
    "\x1b[36m(TaskRunnerV1 pid=1804)\x1b[0m Training Progress:  40%|####      | 2/5\n"
    "\x1b[36m(TaskRunnerV1 pid=1804)\x1b[0m step:2 - training/rollout_actor_probs_pearson_corr:0.9999794363975525 - "
    "actor/perf/max_memory_allocated_gb:5.355030059814453 - prompt_length/mean:170.25 - "
    "response_length/mean:32.0 - num_turns/mean:np.float64(2.0) - timing_s/gen:2.2246726939999917 - "
    "timing_s/old_log_prob:0.7277319300000045 - timing_s/ref:0.6871743390000233 - "
    "timing_s/update_actor:1.227735100000018 - timing_s/update_weights:0.5021405589999972 - "
    "timing_s/step:5.441550094999968 - perf/throughput:1189.3669794470648\n"
    "step:3 - timing_s/gen:2.23 - timing_s/old_log_prob:1.17 - timing_s/ref:0.59 - timing_s/update_actor:1.42 - "
    "timing_s/update_weights:0.62 - timing_s/step:6.10 - actor/perf/max_memory_allocated_gb:5.38 - "
    "training/rollout_actor_probs_pearson_corr:0.999982\n"
)


# ------------------------------------------------------------------------------------------------- floor
@pytest.mark.parametrize("size", ["tiny", "7b"])
def test_param_count_matches_meta_model(size: str) -> None:
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from r1aqa_plugin.models.qwen2_audio.builder import build_config

    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration._from_config(build_config(size))
    counted = floor.count_params(size)
    assert counted.total == sum(p.numel() for p in model.parameters())
    assert counted.audio + counted.projector == sum(
        p.numel() for n, p in model.named_parameters() if "audio_tower" in n or "multi_modal_projector" in n)


def test_7b_shapes_and_floors() -> None:
    p = floor.count_params("7b")
    assert 8.3e9 < p.total < 8.5e9  # Qwen2-Audio report: 8.2-8.4 B
    assert floor.kv_bytes_per_token("7b") == 512 * 1024  # 32 KV heads x 128 x 2 (K, V) x 32 layers x bf16
    assert [floor.audio_tokens(s) for s in (4, 10, 30, 45)] == [100, 250, 750, 750]
    f = floor.grpo_floor("7b")
    assert f.shape.prompt_tokens == 333 and f.shape.seq_len == 589
    # the decode memory floor the issue quotes (~2.8 s for 128 x 256 at ~333 prompt tokens)
    assert 2.5 < floor.rollout_floor_seconds(f) < 3.1
    # training 6 x N x T dominates; the whole step floor sits far under R1-AQA's ~128 GPU-s and the 16 GPU-s goal
    step = floor.step_floor_seconds(f)
    assert 9 < step < 16
    assert floor.step_floor_seconds(f, old_log_prob=False) == pytest.approx(
        step - f.seconds("old log-prob (text)", "old log-prob (encoder)"))
    ifs = [s for _, s in floor.what_if("7b")]
    assert ifs == sorted(ifs, reverse=True)
    # hook AB's floor: the decoder's training and reference tokens of 16 prompts + 128 responses, not 128 rows
    shape = floor.Shape()
    shared = floor.grpo_floor("7b", prompt_per="prompt")
    tokens = shape.prompts * shape.prompt_tokens + shape.seqs * (shape.seq_len - shape.prompt_tokens)
    assert shared.rows["ref log-prob (text)"]["flops"] == pytest.approx(
        f.rows["ref log-prob (text)"]["flops"] * tokens / (shape.seqs * shape.seq_len), rel=0.05)


def test_floor_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "floor.json"
    assert floor.main(["--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "GRPO step floor" in text and "rollout decode (HBM)" in text
    data = json.loads(out.read_text())
    assert data["params"]["total"] == floor.count_params("7b").total
    assert data["step_floor_s"] > data["step_floor_no_old_log_prob_s"] > data["rollout_floor_s"]


def test_prompt_partition_whole_prompts_keep_hook_abs_saving_on_every_gpu_count(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]):
    import prompt_partition

    out = tmp_path / "partition.json"
    assert prompt_partition.main(["--gpus", "1,2,8", "--trials", "5", "--json", str(out)]) == 0
    assert "| GPUs | prompts a rank holds rows of (verl)" in capsys.readouterr().out
    one, two, eight = json.loads(out.read_text())["rows"]
    assert one["packed_rows"] == one["packed_whole"] < one["separate"]  # one rank: the same partition
    for row in (two, eight):  # verl's row balance splits prompts over ranks; whole prompts pack as on one GPU
        assert row["packed_whole"] < row["packed_rows"] < row["separate"]
        assert abs(row["packed_whole"] / row["separate"] - one["packed_whole"] / one["separate"]) < 0.02
        assert 1.0 <= row["balance_whole"] <= row["balance_whole_worst"] < 1.1
    assert eight["prompts_per_rank_rows"] > 2  # 16 rows a rank from more than the 2 prompts whole ones would hold


# ----------------------------------------------------------------------------------------- GRPO log parser
def test_parse_verl_console_metrics() -> None:
    steps = gsb.parse_metrics(LOG)
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert steps[1]["timing_s/gen"] == pytest.approx(2.2246726939999917)
    assert steps[0]["num_turns/min"] == 2.0 and steps[1]["num_turns/mean"] == 2.0  # np.int32(2) / np.float64(2.0)
    s = gsb.summarize(steps, gpus=2)
    assert s["steps"] == 2  # step 1 (warm-up) excluded
    assert s["timing_s/step"] == pytest.approx((5.441550094999968 + 6.10) / 2)
    assert s["gpu_s"] == pytest.approx(2 * s["timing_s/step"])
    assert s["peak_gb"] == pytest.approx(5.38)
    table = gsb.table([("tiny", s)], size="7b")
    assert "| tiny | 2 | 2 |" in table and "R1-AQA" in table


def test_parse_real_h200_logs() -> None:
    # verl's step lines as they came back from the H200s on 2026-11-28 (docs/gpu-runs.md): tiny quickstart, 7B 2 GPUs
    tiny = gsb.parse_metrics((REPO / "tests/fixtures/h200/quickstart-tiny.log").read_text())
    assert [s["step"] for s in tiny] == [1, 2, 3, 4, 5]
    assert gsb.summarize(tiny, 1)["timing_s/gen"] == pytest.approx((2.22 + 2.191 + 2.228 + 2.187) / 4, abs=0.01)
    big = gsb.summarize(gsb.parse_metrics((REPO / "tests/fixtures/h200/grpo-baseline-2gpu.log").read_text()), 2)
    assert big["steps"] == 1 and big["gpu_s"] == pytest.approx(2 * 42.52, abs=0.01)
    assert big["peak_gb"] == pytest.approx(80.67, abs=0.01)
    assert "| x | 2 | 1 |" in gsb.table([("x", big)])


def test_contrast_table_ratio(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH / "gpu"))
    import contrast_table

    line = "step:{} - rollout_corr/log_ppl_abs_diff:{} - training/rollout_actor_probs_pearson_corr:0.99\n"
    (tmp_path / "same.log").write_text(line.format(1, 0.001) + line.format(4, 0.002))
    (tmp_path / "rev.log").write_text(line.format(1, 0.02) + line.format(4, 0.01))
    rows = contrast_table.table(str(tmp_path / "same.log"), str(tmp_path / "rev.log")).splitlines()
    assert rows[2].startswith("| 1 | 0.001 | 0.99 | - | 0.02 |") and rows[2].endswith("| 20 |")
    assert rows[3].endswith("| 5 |")


def test_parallel_session_runs_queues_detached_and_packs_logs(tmp_path: Path) -> None:
    queues = tmp_path / "queues.sh"
    log = (REPO / "tests/fixtures/h200/grpo-baseline-2gpu.log").read_text()
    queues.write_text("QUEUE_a() { export CUDA_VISIBLE_DEVICES=0; step a1 true; step a2 false; step a3 echo hi; "
                      "step a4 nproc; }\n"
                      "QUEUE_b() { export CUDA_VISIBLE_DEVICES=1; step b1 sleep 1; step grpo-x-2gpu cat \"$LOG\"; }\n")
    env = {**os.environ, "SESSION_DIR": str(tmp_path / "s"), "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "w"),
           "QUEUE_FILE": str(queues), "QUEUES": "a,b", "STAGGER": "0", "R1AQA_SITE_READY": "1",
           "LOG": str(REPO / "tests/fixtures/h200/grpo-baseline-2gpu.log"), "PYTHONPATH": "", "MACHINE_CLEANUP": "0"}
    # a process named like a verl run that is not the session's: the session must leave it alone on this machine
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "verl.trainer.main_ppo"])
    script = str(BENCH / "gpu" / "parallel_session.sh")
    start = subprocess.run(["bash", script, "start", "3"], env=env, capture_output=True, text=True, timeout=60)
    assert start.returncode == 0 and "queues started" in start.stdout, start.stdout + start.stderr
    done = subprocess.run(["bash", script, "wait", "60"], env=env, capture_output=True, text=True, timeout=90)
    assert "ALL DONE" in done.stdout, done.stdout + done.stderr
    jobs = (tmp_path / "out" / "jobs.tsv").read_text()
    assert "a1\tgpus=0\texit=0" in jobs and "a2\tgpus=0\texit=1" in jobs and "b1\tgpus=1\texit=0" in jobs
    assert "a3\tgpus=0\texit=0" in jobs  # a failed job does not stop its queue
    assert (tmp_path / "s" / "a3.log").read_text() == "hi\n" and (tmp_path / "out" / "0-logs.tgz").stat().st_size
    cores = len(os.sched_getaffinity(0))  # two queues: each runs on its own half of the cores
    assert int((tmp_path / "s" / "a4.log").read_text()) == (cores // 2 if cores >= 2 else cores)
    assert (tmp_path / "s" / "grpo-x-2gpu.log").read_text() == log
    assert "| grpo-x-2gpu | 2 | 1 |" in (tmp_path / "out" / "grpo-table.md").read_text()  # the 7B table, packed
    assert decoy.poll() is None, "MACHINE_CLEANUP=0: the session killed a process it did not start"
    decoy.kill()


@pytest.mark.parametrize(("queues", "told"), [
    ("lp2,perf1", ["refused: queue lp2", "perf1", "starves the learning proof"]),
    ("one,lora", ["refused: queue lora", "one", "host memory"]),  # on this host, under 400 GiB
    ("one,lorab", ["refused: queue lorab", "one", "host memory"]),
])
def test_parallel_session_refuses_a_queue_beside_the_cpu_offloaded_7b(tmp_path: Path, queues: str,
                                                                    told: list[str]) -> None:
    env = {**os.environ, "SESSION_DIR": str(tmp_path / "s"), "QUEUES": queues}
    env.pop("MIX_OK", None)
    script = str(BENCH / "gpu" / "parallel_session.sh")
    refused = subprocess.run(["bash", script, "start", "1"], env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and all(t in refused.stderr for t in told), refused.stderr
    assert not (tmp_path / "s").exists()  # nothing started


def _queue_calls(tmp_path: Path, queue: str, stubs: str, env_extra: dict[str, str]) -> list[str]:
    """Run one queue of parallel_session.sh with the phases replaced by ``stubs`` (bash functions that append their
    arguments to $S/calls) to the end; the calls, sorted (the queue runs its jobs side by side)."""
    (tmp_path / "stubs.sh").write_text(stubs)
    env = {**os.environ, "SESSION_DIR": str(tmp_path / "s"), "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "w"),
           "QUEUE_FILE": str(tmp_path / "stubs.sh"), "QUEUES": queue, "STAGGER": "0", "LP_STAGGER": "0",
           "R1AQA_SITE_READY": "1", "PYTHONPATH": "", "MACHINE_CLEANUP": "0"}
    # the queue's defaults, not the caller's
    for var in ("TASKS", "TRAIN_TASKS", "LISTEN_TASKS", "REH_SWEEP", "LP_ARMS", "SEED", "ENV_B"):
        env.pop(var, None)
    env.update(env_extra)
    script = str(BENCH / "gpu" / "parallel_session.sh")
    assert subprocess.run(["bash", script, "start", "3"], env=env, capture_output=True, timeout=60).returncode == 0
    done = subprocess.run(["bash", script, "wait", "60"], env=env, capture_output=True, text=True, timeout=90)
    assert "ALL DONE" in done.stdout, done.stdout + done.stderr
    return sorted((tmp_path / "s" / "calls").read_text().splitlines())


@pytest.mark.parametrize("queues", ["one", "one,hooks"])
def test_queue_one_runs_the_hook_jobs_first_unless_queue_hooks_runs_them_on_the_other_gpu(tmp_path: Path,
                                                                                       queues: str) -> None:
    stubs = "".join(f'{f}() {{ echo "{f} gpu=$CUDA_VISIBLE_DEVICES $*${{STEPS:+ steps=$STEPS}}" >> "$S/calls"; }}\n'
                    for f in ("gpu_hooks", "unit_overhead", "optimizer_stream", "grpo7b"))
    calls = _queue_calls(tmp_path, queues, stubs, {"CPU_SPLIT": "0"})
    gpu = "0" if queues == "one" else "1"
    assert calls == sorted([f"gpu_hooks gpu={gpu} ", f"unit_overhead gpu={gpu} ", f"optimizer_stream gpu={gpu} ",
                            "grpo7b gpu=0 1 prof1liger steps=4", "grpo7b gpu=0 1 wins1scatter",
                            "grpo7b gpu=0 1 wins1keep8", "grpo7b gpu=0 1 wins1enc",
                            "grpo7b gpu=0 1 wins1big", "grpo7b gpu=0 1 wins1fast",
                            "grpo7b gpu=0 1 prof1 steps=4",
                            "grpo7b gpu=0 1 wins1v",
                            "grpo7b gpu=0 1 wins1acc", "grpo7b gpu=0 1 wins1"])


def test_kv_queue_runs_bare_vllm_then_its_fp8_kv_cache_on_gpu0(tmp_path: Path) -> None:
    stubs = 'rollout() { echo "rollout gpu=$CUDA_VISIBLE_DEVICES name=${1:-rollout} modes=${2:-all}" >> "$S/calls"; }\n'
    assert _queue_calls(tmp_path, "kv", stubs, {}) == ["rollout gpu=0 name=rollout-kv modes=vllm,vllm-kvfp8"]


def test_merge_queue_runs_hook_ys_gpu_test_then_its_bench_on_gpu0(tmp_path: Path) -> None:
    stubs = ('gpu_hooks() { echo "gpu_hooks gpu=$CUDA_VISIBLE_DEVICES k=${GPU_HOOKS_K:-all}" >> "$S/calls"; }\n'
             'merge_bench() { echo "merge_bench gpu=$CUDA_VISIBLE_DEVICES" >> "$S/calls"; }\n')
    assert _queue_calls(tmp_path, "merge", stubs, {}) == ["gpu_hooks gpu=0 k=merge", "merge_bench gpu=0"]


@pytest.mark.slow
def test_audio_merge_bench_toy(tmp_path: Path) -> None:
    out = tmp_path / "merge.json"
    proc = subprocess.run([sys.executable, str(BENCH / "audio_merge_bench.py"), "--size", "tiny", "--tokens", "8",
                           "--clip-seconds", "2", "--micro", "8", "--repeats", "1", "--dtype", "fp32",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["micro"] == 8 and len(row["runs_0"]) == len(row["runs_1"]) == 1 and row["s_0"] > 0 and row["s_1"] > 0
    assert "| 8 |" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("hook", ["causal", "shared"])
def test_causal_attention_bench_toy(tmp_path: Path, hook: str) -> None:
    out = tmp_path / "causal.json"
    proc = subprocess.run([sys.executable, str(BENCH / "causal_attention_bench.py"), "--hook", hook, "--size", "tiny",
                           "--tokens", "8", "--clip-seconds", "2", "--micro", "4", "--short", "3", "--repeats", "1",
                           "--dtype", "fp32", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["micro"] == 4 and len(set(row["lengths"])) > 1  # unequal rows: verl's mask has padding in it
    assert row["max_abs_logprob_diff"] < 1e-5 and row["s_update_0"] > 0 and row["s_update_1"] > 0
    assert "| 4 |" in proc.stdout
    assert {"causal": "hook AA", "shared": "hook AB"}[hook] in proc.stdout
    if hook == "shared":  # the rows' one clip and prompt are packed once: the packed trace says so
        assert "packed into" in proc.stdout


def test_shared_queue_runs_hook_abs_test_and_bench_then_the_line_at_two_micro_batch_sizes_and_its_control(
        tmp_path: Path) -> None:
    stubs = "".join(f'{f}() {{ echo "{f} gpu=$CUDA_VISIBLE_DEVICES $*${{STEPS:+ steps=$STEPS}}'
                    f'${{GPU_HOOKS_K:+ k=$GPU_HOOKS_K}}${{HOOK:+ hook=$HOOK}}" >> "$S/calls"; }}\n'
                    for f in ("gpu_hooks", "causal_bench", "grpo7b"))
    assert _queue_calls(tmp_path, "shared", stubs, {}) == sorted([
        "gpu_hooks gpu=0  k=shared", "causal_bench gpu=0  hook=shared",
        "grpo7b gpu=0 1 wins1smallshared steps=3", "grpo7b gpu=0 1 wins1smallshared32 steps=4",
        "grpo7b gpu=0 1 wins1smallnoshared steps=3"])
    line = set(gsb.VARIANTS["wins1smallkeep8"][1])
    assert set(gsb.VARIANTS["wins1smallshared"][1]) == line  # hook AB is on by default
    assert set(gsb.VARIANTS["wins1smallnoshared"][1]) - line == {"env:R1AQA_SHARED_PROMPT=0"}
    assert set(gsb.VARIANTS["wins1smallshared32"][1]) == set(gsb.VARIANTS["wins1shared32"][1]) | set(gsb.SMALL_HOST)
    _, cfg, _ = _composed("wins1smallshared32", 1, tmp_path)
    assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 32
    assert cfg.actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu == 64


def test_small_queue_runs_the_1gpu_line_its_hook_aa_control_and_more_kept_layers(tmp_path: Path) -> None:
    stubs = 'grpo7b() { echo "grpo7b gpu=$CUDA_VISIBLE_DEVICES $* steps=$STEPS" >> "$S/calls"; }\n'
    assert _queue_calls(tmp_path, "small", stubs, {}) == sorted([
        "grpo7b gpu=0 1 wins1smallkeep8 steps=4", "grpo7b gpu=0 1 wins1smallkeep8mask steps=4",
        "grpo7b gpu=0 1 wins1smallkeep12 steps=3"])
    for variant in ("wins1small", "prof1small", "wins1smallkeep8", "wins1smallkeep12"):
        _, cfg, _ = _composed(variant, 1, tmp_path)
        assert (cfg.actor_rollout_ref.rollout.agent.num_workers, cfg.reward.num_workers) == (2, 2)
        assert cfg.actor_rollout_ref.model.use_liger
    assert gsb.profiled_steps(gsb.VARIANTS["prof1small"][1]) == {3}
    assert not gsb.profiled_steps(gsb.VARIANTS["wins1small"][1])
    small = set(gsb.VARIANTS["wins1small"][1])
    assert set(gsb.VARIANTS["wins1smallmask"][1]) - small == {"env:R1AQA_CAUSAL_ATTENTION=0"}
    kept = {"env:R1AQA_ENCODER_RECOMPUTE=0", "env:R1AQA_DECODER_KEEP_LAYERS=8"}
    assert set(gsb.VARIANTS["wins1smallkeep8"][1]) - small == kept
    assert set(gsb.VARIANTS["wins1smallkeep8mask"][1]) - small == kept | {"env:R1AQA_CAUSAL_ATTENTION=0"}
    assert set(gsb.merge_overrides(gsb.VARIANTS["wins1smallkeep12"][1])) - small == {
        "env:R1AQA_ENCODER_RECOMPUTE=0", "env:R1AQA_DECODER_KEEP_LAYERS=12"}


def test_causal_queue_runs_hook_aa_with_cudnn_off_then_on_then_the_control(tmp_path: Path) -> None:
    stubs = ('grpo7b() { echo "grpo7b gpu=$CUDA_VISIBLE_DEVICES $* steps=$STEPS" >> "$S/calls"; }\n'
             'gpu_hooks() { echo "gpu-hooks $GPU_HOOKS_K" >> "$S/calls"; }\n'
             'causal_bench() { echo "causal-bench cudnn=${CUDNN_SDP:-off}" >> "$S/calls"; }\n')
    assert _queue_calls(tmp_path, "causal", stubs, {}) == sorted([
        "gpu-hooks flash", "causal-bench cudnn=off", "causal-bench cudnn=on", "grpo7b gpu=0 1 wins1smallmask steps=3"])


@pytest.mark.parametrize("queues", ["lora", "lora,lorab"])
def test_lora_queue_runs_fsdp1_itself_unless_lorab_runs_it_beside_fsdp2(tmp_path: Path, queues: str) -> None:
    stubs = 'grpo7b() { echo "grpo7b gpu=$CUDA_VISIBLE_DEVICES $*" >> "$S/calls"; }\n'
    calls = _queue_calls(tmp_path, queues, stubs, {"CPU_SPLIT": "0"})
    fsdp1 = "grpo7b gpu=1 1 lora1" if queues == "lora" else "grpo7b gpu=0 1 lora1"
    assert calls == sorted(["grpo7b gpu=1 1 lora1fsdp2", fsdp1, "grpo7b gpu=1 1 lora1verl"])


@pytest.mark.parametrize("sweep", [None, "", "a:small-warm:1e-4 b:small-fmt:3e-4:--kl-coef,0.04,--freeze,lm_head"])
def test_lps_queue_runs_the_verl_arm_before_eval_and_each_rehearsal(tmp_path: Path, sweep: str | None) -> None:
    # the learning-proof phases and the rehearsal itself replaced by stubs that record their arguments
    stubs = ('lp() { echo "lp $LP_ARM $* extra=${LP_EXTRA:+set}" >> "$S/calls"; }\n'
             'rehearse() { echo "rehearse $*" >> "$S/calls"; }\n')
    calls = _queue_calls(tmp_path, "lps", stubs, {} if sweep is None else {"REH_SWEEP": sweep})
    if sweep is None:  # the default: the recipe's setting and one variant
        expected = ["rehearse lr5e-4-kl small-warm 5e-4 --kl-coef 0.04", "rehearse recipe small-warm 3e-4 --kl-coef 0.04"]
    elif sweep == "":  # none
        expected = []
    else:  # commas in an entry's extra part become separate arguments
        expected = ["rehearse a small-warm 1e-4", "rehearse b small-fmt 3e-4 --kl-coef 0.04 --freeze lm_head"]
    # lp_grpo's own lp call carries the arm's shared-GPU overrides (fixed vLLM KV cache)
    assert calls == sorted(["lp lp-prep warm extra=", "lp lp-all grpo extra=set", "lp lp-all after extra=set",
                            "lp lp-prep before extra=", *expected])


@pytest.mark.parametrize("equal, expected", [("true", ""), ("false", "0"), (None, "0")])
def test_lp2_arms_keep_hook_p_only_if_its_model_check_passed_on_the_gpu(tmp_path: Path, equal: str | None,
                                                                        expected: str) -> None:
    # None: the bench wrote nothing (it crashed)
    report = '{"model_check": {"equal": %s}}' % equal
    write = ":" if equal is None else f"echo '{report}' > \"$S/feature-transfer.json\""
    stubs = ('lp() { echo "lp $LP_ARM $* trim=${R1AQA_TRIM_FEATURES:-}" >> "$S/calls"; }\n'
             'logprob_bench() { :; }\ndedup_small() { :; }\ngpu_hooks() { :; }\n'
             f'feature_transfer() {{ sleep 1; {write}; }}\n')
    calls = _queue_calls(tmp_path, "lp2", stubs, {})
    assert [c for c in calls if " grpo " in c or " after " in c] == [f"lp lp-a after trim={expected}",
                                                                      f"lp lp-a grpo trim={expected}"]
    assert "lp lp-prep warm trim=" in calls  # the warm-up does not wait for the check


@pytest.mark.parametrize("arms", [None, "x:instrument y:beep_count:a.b=1;+c.d=2;~e.f", "TRAIN_TASKS"])
def test_lp2_queue_runs_each_verl_arm_with_its_tasks_and_overrides(tmp_path: Path, arms: str | None) -> None:
    stubs = ('lp() { echo "lp $LP_ARM $* tasks=${TRAIN_TASKS:-} extra=${LP_EXTRA:+${LP_EXTRA#"$LP_SHARE"}}" >> "$S/calls"; }\n'
             'logprob_bench() { echo "logprob-bench gpu=$CUDA_VISIBLE_DEVICES" >> "$S/calls"; }\n'
             'dedup_small() { echo "dedup-small gpu=$CUDA_VISIBLE_DEVICES" >> "$S/calls"; }\n'
             'feature_transfer() { echo "feature-transfer gpu=$CUDA_VISIBLE_DEVICES" >> "$S/calls"; }\n'
             'gpu_hooks() { echo "gpu-hooks gpu=$CUDA_VISIBLE_DEVICES" >> "$S/calls"; }\n')
    speech = "beep_count,instrument,spoken_digit,spoken_language"
    env = {} if arms is None else {"TRAIN_TASKS": speech} if arms == "TRAIN_TASKS" else {"LP_ARMS": arms}
    calls = _queue_calls(tmp_path, "lp2", stubs, env)
    if arms is None:  # the recipe alone, on run.sh's default tasks (the thirteenth run's: one of each family)
        arm_calls = [f"lp lp-a {p} tasks=beep_count,instrument,spoken_language extra=" for p in ("grpo", "after")]
    elif arms == "TRAIN_TASKS":  # no LP_ARMS: one arm on TRAIN_TASKS, the tasks the warm-up's code words teach
        arm_calls = [f"lp lp-a {p} tasks={speech} extra=" for p in ("grpo", "after")]
    else:  # ";" separates an arm's overrides; each arm trains on its own tasks
        arm_calls = [f"lp x {p} tasks=instrument extra=" for p in ("grpo", "after")] + [
            f"lp y {p} tasks=beep_count extra= a.b=1 +c.d=2 ~e.f" for p in ("grpo", "after")]  # ~: Hydra deletes
    prep = speech if arms == "TRAIN_TASKS" else ""
    assert calls == sorted(["logprob-bench gpu=0", "dedup-small gpu=0", "feature-transfer gpu=0", "gpu-hooks gpu=0",
                            f"lp lp-prep warm tasks={prep} extra=",
                            f"lp lp-prep before tasks={prep} extra=", *arm_calls])


@pytest.mark.parametrize("env_b", ["", "R1AQA_REF_ON_GPU=1 X_B=2"])
def test_lp2b_is_an_independent_replicate_of_lp2_beside_it(tmp_path: Path, env_b: str) -> None:
    stubs = ('lp() { echo "lp $LP_ARM $* gpu=$CUDA_VISIBLE_DEVICES seed=${SEED:-} env=${R1AQA_REF_ON_GPU:-}${X_B:-}" '
             '>> "$S/calls"; }\n'
             'logprob_bench() { echo "logprob-bench" >> "$S/calls"; }\n'
             'dedup_small() { echo "dedup-small" >> "$S/calls"; }\n'
             'feature_transfer() { echo "feature-transfer" >> "$S/calls"; }\n'
             'gpu_hooks() { echo "gpu-hooks" >> "$S/calls"; }\n')
    calls = _queue_calls(tmp_path, "lp2,lp2b", stubs, {"ENV_B": env_b} if env_b else {})
    # lp2 as alone (its benches once); lp2b: seed 1 on GPU 1, every name tagged, no benches, and ENV_B its own
    b = "12" if env_b else ""
    assert calls == sorted(["logprob-bench", "dedup-small", "feature-transfer", "gpu-hooks",
                            *[f"lp lp-prep {p} gpu=0 seed= env=" for p in ("warm", "before")],
                            *[f"lp lp-a {p} gpu=0 seed= env=" for p in ("grpo", "after")],
                            *[f"lp lp-prep-s1 {p} gpu=1 seed=1 env={b}" for p in ("warm", "before")],
                            *[f"lp lp-a-s1 {p} gpu=1 seed=1 env={b}" for p in ("grpo", "after")]])


def test_lp2b_env_b_gives_its_own_arm_overrides_and_steps(tmp_path: Path) -> None:
    # the twelfth run's shape: seed 1 alone gets a cosine learning rate over 50 steps (docs/learning.md "Next")
    stubs = ('lp() { echo "lp $LP_ARM $* steps=${STEPS:-} extra=${LP_EXTRA:+${LP_EXTRA#"$LP_SHARE"}}" >> "$S/calls"; }\n'
             'logprob_bench() { :; }\ndedup_small() { :; }\nfeature_transfer() { :; }\ngpu_hooks() { :; }\n')
    env_b = "STEPS=50 LP_ARMS=lp-a:beep_count,instrument:a.lr_scheduler_type=cosine;a.min_lr_ratio=0.1"
    calls = _queue_calls(tmp_path, "lp2,lp2b", stubs, {"ENV_B": env_b, "TRAIN_TASKS": "beep_count,instrument"})
    assert [c for c in calls if " grpo " in c] == [
        "lp lp-a grpo steps= extra=", "lp lp-a-s1 grpo steps=50 extra= a.lr_scheduler_type=cosine a.min_lr_ratio=0.1"]


@pytest.mark.parametrize(("argv", "group"), [
    (["ray::WorkerDict.actor_rollout_ref_init_model"], "ray::WorkerDict"),
    (["ray::AgentLoopWorkerTQ.generate_sequences  "], "ray::AgentLoopWorkerTQ"),
    (["VLLM::EngineCore"], "VLLM::EngineCore"),
    (["ray::agent_loop_worker_2_bf5c0228:AgentLoopWorkerTQ.generate"], "ray::AgentLoopWorkerTQ"),
    (["ray::vllm_server_0_0:vLLMHttpServer"], "ray::vLLMHttpServer"),
    (["/usr/bin/python3", "-m", "verl.trainer.main_ppo", "+recipe=r1aqa_grpo"], "main_ppo"),
    (["python3", "-u", "/repo/benchmarks/grpo_step_bench.py", "run"], "grpo_step_bench.py"),
    (["python3", "-c", "import time"], "python3 -c"),
    (["/usr/bin/raylet", "--node"], "raylet"),
    ([""], "other"),
])
def test_host_memory_groups_processes_by_what_ray_and_vllm_name_them(argv: list[str], group: str) -> None:
    assert host_memory.label(argv) == group


def test_host_memory_sampler_sees_a_child_hold_memory_and_names_it(tmp_path: Path) -> None:
    # a child that holds 300 MB resident (touched) for a moment, under a name of its own
    script = tmp_path / "holder.py"
    script.write_text("import time\nblock = bytearray(300_000_000)\nblock[::4096] = b'x' * len(block[::4096])\n"
                      "time.sleep(1.5)\n")
    sampler = host_memory.Sampler(interval=0.1).start()
    subprocess.run([sys.executable, str(script)], check=True, timeout=60)
    sampler.stop()
    assert sampler.samples >= 5 and sampler.peak_used > 0
    assert sampler.peaks["holder.py"] >= 0.29, sampler.peaks
    table = sampler.table()
    assert "| holder.py |" in table and table.startswith("Host memory in use:")
    assert sampler.peak_held >= sampler.at_peak["holder.py"] >= 0.29 and sampler.start_used > 0


def test_host_memory_describes_the_moment_the_processes_held_most_not_the_hosts_fullest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the first sample: the host still full of a finished run's memory that no process holds; then the run itself
    snaps = iter([(140.0, {"ray::IDLE": 0.5}), (120.0, {"ray::WorkerDict": 96.0, "ray::IDLE": 1.0}),
                  (118.0, {"ray::WorkerDict": 90.0})])
    monkeypatch.setattr(host_memory, "snapshot", lambda: next(snaps))
    sampler = host_memory.Sampler(interval=0.0)
    for _ in range(3):
        sampler._stop.set()
        sampler._run()
    assert (sampler.start_used, sampler.peak_used, sampler.peak_held, sampler.used_at_held) == (140.0, 140.0, 97.0,
                                                                                               120.0)
    assert "| ray::WorkerDict | 96.0 | 96.0 |" in sampler.table()


def test_grpo_run_writes_the_host_memory_table_beside_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # the run's command replaced by a child that prints two of verl's step lines and holds memory meanwhile
    child = tmp_path / "fake_main_ppo.py"
    child.write_text("import sys, time\nblock = bytearray(200_000_000)\nblock[::4096] = b'x' * len(block[::4096])\n"
                     f"sys.stdout.write({LOG!r})\nsys.stdout.flush()\ntime.sleep(1.0)\n")
    monkeypatch.setattr(gsb, "command", lambda variant, a: ([sys.executable, str(child), "x", "y"], {}))
    out_json = tmp_path / "run.json"
    assert gsb.main(["run", "--model", "M", "--data", "D", "--gpus", "1", "--variants", "wins1v", "--logs",
                     str(tmp_path), "--host-interval", "0.1", "--json", str(out_json)]) == 0
    hostmem = (tmp_path / "grpo-wins1v-1gpu.hostmem.md").read_text()
    assert "| fake_main_ppo.py |" in hostmem
    row = json.loads(out_json.read_text())["wins1v"]
    assert row["steps"] == 2 and row["host_peak_gb"] > 0 and row["processes_gb_at_peak"]["fake_main_ppo.py"] >= 0.19
    assert "processes held up to" in capsys.readouterr().out


def test_merge_overrides_later_wins_and_keeps_plus() -> None:
    merged = gsb.merge_overrides(["a.b=1", "+c.d=x"], ["a.b=2", "c.d=y", "e=3"])
    assert merged == ["a.b=2", "+c.d=y", "e=3"]
    for name in gsb.VARIANTS:  # every variant is a valid set of key=value overrides
        assert all("=" in o for o in gsb.VARIANTS[name][1])


def test_grpo_dry_run_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert gsb.main(["run", "--model", "M", "--data", "D.parquet", "--gpus", "1", "--variants", "baseline,wins",
                     "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+recipe=r1aqa_grpo" in out and "algorithm.rollout_correction.bypass_mode=True" in out
    wins = [line for line in out.splitlines() if "bypass_mode" in line][0]
    assert wins.count("gpu_memory_utilization") == 1 and "gpu_memory_utilization=0.5 " in wins + " "
    assert "optimizer_offload=True" in wins
    assert wins.count("ref.log_prob_micro_batch_size_per_gpu") == 1 and "log_prob_micro_batch_size_per_gpu=32" in wins


def test_scaling_table_per_variant_against_the_fewest_gpus() -> None:
    def row(gpus: int, step: float) -> dict:
        return {"steps": 2, "gpus": gpus, "timing_s/step": step}

    rows = [("grpo-wins-2gpu", row(2, 30.0)), ("grpo-wins-8gpu", row(8, 10.0)), ("grpo-baseline-8gpu", row(8, 12.0)),
            ("grpo-winsref-2gpu", {"steps": 0})]
    lines = gsb.scaling(rows).splitlines()
    # 2 -> 8 GPUs: 3x faster on 4x the GPUs (0.75); baseline and the failed run have one count each: no rows
    assert lines[2:4] == ["| wins | wins | 2 | 30.00 | 60.0 | 1.00 | 1.00 |",
                          "| wins | wins | 8 | 10.00 | 80.0 | 3.00 | 0.75 |"]
    assert len(lines) == 5 and gsb.scaling(rows[2:]) == ""
    # the 1-GPU form (optimizer step on the CPU) is the variant's 1-GPU point
    lines = gsb.scaling([("grpo-wins1-1gpu", row(1, 80.0)), *rows]).splitlines()
    assert lines[2] == "| wins | wins1 | 1 | 80.00 | 80.0 | 1.00 | 1.00 |"
    assert lines[4] == "| wins | wins | 8 | 10.00 | 80.0 | 8.00 | 1.00 |"
    # two 1-GPU forms (hook V's streamed optimizer, the step on the CPU), either order: the faster is the point
    for ones in ([("grpo-wins1-1gpu", row(1, 80.0)), ("grpo-wins1v-1gpu", row(1, 40.0))],
                 [("grpo-wins1v-1gpu", row(1, 40.0)), ("grpo-wins1-1gpu", row(1, 80.0))]):
        lines = gsb.scaling([*ones, *rows]).splitlines()
        assert lines[2] == "| wins | wins1v | 1 | 40.00 | 40.0 | 1.00 | 1.00 |"
        assert lines[4] == "| wins | wins | 8 | 10.00 | 80.0 | 4.00 | 0.50 |"
    assert gsb.variant_of("grpo-wins1ref-1gpu") == "wins1ref" and gsb.variant_of("wins") == "wins"


def test_env_variants_set_the_environment_not_an_override(capsys: pytest.CaptureFixture[str]) -> None:
    a = argparse.Namespace(data="D", model="M", steps=3, logs="L", gpus=2, extra=[])
    cmd, env = gsb.command("nodedup", a)
    assert not any(o.startswith("env:") or "ENCODER_DEDUP" in o for o in cmd)
    assert env == {"R1AQA_ENCODER_DEDUP": "0"}
    assert gsb.command("baseline", a)[1] == {}
    a.extra = ["env:R1AQA_ENCODER_DEDUP=1"]
    assert gsb.command("nodedup", a)[1] == {"R1AQA_ENCODER_DEDUP": "1"}  # --extra wins, as for overrides


def test_ref_offload_memory_says_it_needs_cuda_and_builds_the_reference_as_verl_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    import ref_offload_memory as rom
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU path: run on the GPU, the table is in docs/benchmarks.md")
    assert rom.main(["--layers", "2", "--width", "8"]) == 2
    assert "needs CUDA" in capsys.readouterr().err
    net = rom.model(3, 16)
    assert len(net) == 3 and {p.dtype for p in net.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in rom.model(2, 16, "fp32").parameters()} == {torch.float32}  # verl's default reference
    with pytest.raises(ValueError, match="unknown placement"):
        rom.wrap(net, "zero3")


@pytest.mark.slow
def test_encoder_dedup_bench_toy(tmp_path: Path) -> None:
    out = tmp_path / "dedup.json"
    cmd = [sys.executable, str(BENCH / "encoder_dedup_bench.py"), "--size", "tiny", "--tokens", "8",
           "--clip-seconds", "2", "--micro", "4", "--distinct", "1,4", "--repeats", "1", "--dtype", "fp32",
           "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| pass | distinct clips |" in proc.stdout
    rows = {(r["pass"], r["distinct"]): r for r in json.loads(out.read_text())["rows"]}
    assert (rows[("update", 1)]["encoded_0"], rows[("update", 1)]["encoded_1"]) == (4, 1)
    assert (rows[("log-prob", 4)]["encoded_0"], rows[("log-prob", 4)]["encoded_1"]) == (4, 4)


def test_warmup_features_bench_toy(tiny_model_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    from r1aqa_plugin.data.records import BuildReport
    from r1aqa_plugin.data.synthetic import build_synthetic

    data = tmp_path / "syn.parquet"
    pd.DataFrame(list(build_synthetic(BuildReport("synthetic-aqa"), size=6, seed=3, tasks="sound"))).to_parquet(data)
    cmd = [sys.executable, str(BENCH / "warmup_features.py"), "--model", str(tiny_model_dir), "--data", str(data),
           "--workers", "1", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 rows x 2 copies" in proc.stdout and "tensors equal across paths" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| each")]
    assert len(lines) == 3 and all("(6 extractions)" in line for line in lines[1:])


def test_feature_transfer_bench_toy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import feature_transfer_bench as ftb

    out = tmp_path / "ftb.json"
    assert ftb.main(["--mels", "80", "--seconds", "4", "--samples", "8", "--micro", "4", "--repeats", "1",
                     "--check-model", "tiny", "--json", str(out)]) == 0
    assert "| mels | clip s | MB/sample full -> cut |" in capsys.readouterr().out
    report = json.loads(out.read_text())
    check = report["model_check"]  # the 10 s clip is the longest: 1,000 frames + hook P's 2
    assert check["cut_frames"] == 1002 and check["equal"] and check["max_abs_diff"] == 0.0
    (row,) = report["results"]
    # 80 mels x 3,000 frames of fp32 + the int32 mask, against 402 frames (400 of a 4 s clip + hook P's margin)
    assert row["mb_per_sample_full"] == pytest.approx(80 * 3000 * 4 / 1e6 + 3000 * 4 / 1e6)
    assert row["mb_per_sample_cut"] == pytest.approx(80 * 402 * 4 / 1e6 + 402 * 4 / 1e6)
    assert row["batch_s_full"] > 0 and row["pickle_s_cut"] > 0


# --------------------------------------------------------------------------------------------- rollout bench
def _rollout(tmp_path: Path, modes: str, *extra: str) -> dict:
    out = tmp_path / "rollout.json"
    cmd = [sys.executable, str(BENCH / "rollout_bench.py"), "--modes", modes, "--size", "tiny", "--batch", "2",
           "--n", "2", "--tokens", "8", "--clip-seconds", "2", "--workdir", str(tmp_path), "--json", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| mode" in proc.stdout
    return json.loads(out.read_text())


@pytest.mark.slow
def test_rollout_bench_hf_toy(tmp_path: Path) -> None:
    data = _rollout(tmp_path, "hf-r1aqa,hf-batched", "--hf-prompts", "1")
    rows = {r["mode"]: r for r in data["rows"]}
    assert "RESULT " in (tmp_path / "rollout-hf-batched.log").read_text()  # each child's output is kept
    assert rows["hf-r1aqa"]["extrapolated"] is True and rows["hf-r1aqa"]["calls_timed"] == 1
    assert rows["hf-batched"]["out_tokens"] == 2 * 2 * 8
    assert all(r["floor_s"] > 0 for r in rows.values())


@pytest.mark.slow
@pytest.mark.integration
def test_rollout_bench_vllm_cpu_toy(tmp_path: Path) -> None:
    data = _rollout(tmp_path, "vllm,plugin", "--eager")
    rows = {r["mode"]: r for r in data["rows"]}
    # one plugin child, two rows side by side: the processor verl gets with the adapter, and the stock one
    assert set(rows) == {"vllm", "plugin", "plugin, stock processor"}
    assert rows["vllm"]["out_tokens"] == rows["plugin"]["out_tokens"] == 2 * 2 * 8
    assert rows["plugin, stock processor"]["out_tokens"] == 2 * 2 * 8
    # the plugin path sends collapsed ids and vLLM expands them back: same prompt length as bare vLLM
    assert rows["vllm"]["prompt_len"] == rows["plugin"]["prompt_len"] == rows["plugin, stock processor"]["prompt_len"]
    assert rows["plugin"]["post_features_s"] > 0 and rows["plugin, stock processor"]["post_features_s"] > 0


def test_rollout_bench_kvfp8_is_the_vllm_row_with_an_fp8_kv_cache(tmp_path: Path) -> None:
    """vllm-kvfp8 builds the same engine as vllm but for the KV cache's dtype, and its row says so."""
    import argparse

    sys.path.insert(0, str(BENCH))
    try:
        import rollout_bench as rb
    finally:
        sys.path.remove(str(BENCH))
    a = argparse.Namespace(eager=False, batch=16, n=8, gpu_mem=0.85)
    plain, fp8 = rb._engine_kwargs(a, tmp_path, 600), rb._engine_kwargs(a, tmp_path, 600, "fp8")
    assert fp8.pop("kv_cache_dtype") == "fp8" and plain.pop("kv_cache_dtype") == "auto" and plain == fp8
    rows = [{"mode": "vllm", "seconds": 4.0, "out_tokens": 32768, "floor_s": 2.8},
            {"mode": "vllm, fp8 KV cache", "seconds": 3.0, "out_tokens": 32768, "floor_s": 2.8, "kv_cache_dtype": "fp8"}]
    lines = rb.table(rows, argparse.Namespace()).splitlines()
    assert "1.333" in lines[3] and "KV cache fp8 (the floor is bf16's)" in lines[3]
    assert "KV cache" not in lines[2]


def test_audio_dependence_sees_wrong_audio_far_above_bf16_noise(tiny_model_dir: Path, tmp_path: Path) -> None:
    from r1aqa_plugin.cli import main as r1aqa

    data = tmp_path / "d.parquet"
    assert r1aqa(["data", "build", "synthetic-aqa", "--tasks", "sound", "--size", "6", "--seed", "1",
                  "--no-progress", "--out", str(data)]) == 0
    out = subprocess.run([sys.executable, str(BENCH / "audio_dependence.py"), "--model", str(tiny_model_dir),
                          "--data", str(data), "--rows", "4", "--tokens", "8"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ratio = float(out.stdout.split("ratio ")[1].split("x")[0])
    assert ratio > 3, out.stdout  # another clip moves the random tiny model's log-probs well beyond bf16 rounding


# ------------------------------------------------------------------------------------------------- stack sampler
SAMPLED = """
import math, threading, time
def square_roots():
    return sum(math.sqrt(i) for i in range(2000))
def sines():
    return sum(math.sin(i) for i in range(2000))
def spin(seconds):
    end = time.time() + seconds
    while time.time() < end:
        square_roots()
        sines()
def parked():
    time.sleep(5)  # a C call for the thread's whole life: no leaf-name rule knows it, the one-stack rule does
threading.Thread(target=threading.Event().wait, args=(2,), name="waiter", daemon=True).start()
threading.Thread(target=parked, name="parked", daemon=True).start()
spin(1.5)
"""


def test_stack_sampler_attributes_busy_time_and_skips_waits(tmp_path: Path) -> None:
    import stack_report

    env = {**os.environ, "R1AQA_STACKS_DIR": str(tmp_path / "st"), "R1AQA_STACKS_INTERVAL": "0.01",
           "PYTHONPATH": f"{BENCH / 'stack_sampler'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    (tmp_path / "job.py").write_text(SAMPLED)
    subprocess.run([sys.executable, str(tmp_path / "job.py")], env=env, check=True, timeout=60)
    gs = stack_report.groups(stack_report.load(tmp_path / "st"))
    main = [g for g in gs if g["thread"] == "MainThread"]
    assert len(main) == 1 and 0.9 < main[0]["busy_s"] < 2.5, [(g["thread"], g["busy_s"]) for g in gs]
    spin = [s for f, s in main[0]["incl"].items() if f.startswith("spin ") and "job.py" in f]
    assert spin and spin[0] > 0.8 * main[0]["busy_s"] - 0.3
    assert not [g for g in gs if g["thread"] in ("waiter", "parked")]  # Event.wait and a lifelong sleep: waits
    out = subprocess.run([sys.executable, str(BENCH / "stack_report.py"), str(tmp_path / "st")], capture_output=True,
                         text=True, check=True).stdout
    # spin holds every busy sample, so it is trunk; the table shows what lies under it
    assert "[MainThread]" in out and "`square_roots " in out and "`sines " in out
    # --under: only the samples inside one function, cut to start there
    inside = [g for g in stack_report.groups(stack_report.load(tmp_path / "st"), below="sines")
              if g["thread"] == "MainThread"]
    assert len(inside) == 1 and 0 < inside[0]["busy_s"] < main[0]["busy_s"]
    assert {f.split()[0] for f in inside[0]["incl"] if "job.py" in f} == {"sines", "<genexpr>"}, inside[0]["incl"]


def test_stack_report_weighs_samples_by_their_measured_time_and_reads_older_files(tmp_path: Path) -> None:
    # a sampler woken late (a loaded host) measured 0.5 s for one sample at a 0.05 s interval: the report keeps 0.5;
    # files from before the sampler measured (four fields a row) count the interval per sample
    import stack_report

    busy = ["main x.py:1", "spin x.py:9"]
    (tmp_path / "stacks-1.json").write_text(json.dumps({"pid": 1, "interval": 0.05,
                                                        "rows": [["job", "MainThread", busy, 1, 0.5]]}))
    (tmp_path / "stacks-2.json").write_text(json.dumps({"pid": 2, "interval": 0.05,
                                                        "rows": [["old", "MainThread", busy, 4]]}))
    gs = {g["title"]: g["busy_s"] for g in stack_report.groups(stack_report.load(tmp_path))}
    assert gs == {"job": 0.5, "old": pytest.approx(0.2)}


def test_stack_sampler_off_without_its_variable(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(BENCH / "stack_sampler")}
    env.pop("R1AQA_STACKS_DIR", None)
    code = "import threading; print(sorted(t.name for t in threading.enumerate()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['MainThread']"


def test_lp2_queue_samples_stacks_of_the_verl_arm_only_and_packs_a_table(tmp_path: Path) -> None:
    # the stub GRPO phase is a real Python process, so the sampler's folder and PYTHONPATH are what verl would get
    stubs = ('lp() { echo "lp $LP_ARM $1 stacks=${R1AQA_STACKS_DIR:-}" >> "$S/calls"\n'
             f'  [ "$1" = grpo ] && {sys.executable} -c "import time; t = time.time()\n'
             'while time.time() - t < 0.5: pass"; return 0; }\n')
    # no benches or GPU tests beside it: run for real they took over the 60 s wait on a loaded 2-core machine
    calls = _queue_calls(tmp_path, "lp2", stubs, {"LP_ARMS": "x:instrument", "STACKS": "1", "LOGPROB_BENCH": "0",
                                                    "DEDUP_BENCH": "0", "FEATURE_BENCH": "0", "HOOK_TESTS": "0"})
    s = tmp_path / "s"
    assert calls == sorted(["lp lp-prep warm stacks=", "lp lp-prep before stacks=", f"lp x grpo stacks={s}/x/stacks",
                            "lp x after stacks="])
    assert list((s / "x" / "stacks").glob("stacks-*.json"))
    assert "[MainThread]" in (s / "x" / "stacks.md").read_text()
    assert (tmp_path / "out" / "1-stacks.tgz").stat().st_size


def test_logprob_bench_toy_compares_verls_loop_with_hook_m(tmp_path: Path) -> None:
    import logprob_bench

    assert logprob_bench.main(["--cases", "toy", "--repeats", "1", "--json", str(tmp_path / "lp.json")]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "lp.json").read_text())}
    assert set(rows) == {"verl-loop", "chunked", "torch"}
    assert rows["chunked"]["max_abs_diff"] < 1e-4  # fp32 result of the bf16 logits
    assert rows["verl-loop"]["max_abs_diff"] < 0.1  # verl's loop rounds to bf16
    assert rows["verl-loop"]["speedup_vs_loop"] == 1.0


def test_concurrent_groups_decode_and_extract_once_per_clip_with_once_cache(capsys: pytest.CaptureFixture[str]) -> None:
    import data_throughput

    data_throughput.concurrent_groups(0.5, 4)
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "caches" not in line}
    assert [int(x) for x in rows["OnceCache"][1:]] == [16, 16]  # 16 clips x 8 samples: each clip once
    assert int(rows["plain cache (before)"][2]) >= 16


def test_reward_calls_bench_runs_verls_reward_call_with_and_without_hook_o(capsys: pytest.CaptureFixture[str]) -> None:
    import os

    import data_throughput

    from r1aqa_plugin.models.qwen2_audio import verl_hooks

    before = os.environ.get(verl_hooks.SCORE_FEATURES_ENV)
    data_throughput.reward_calls(0.5)
    assert os.environ.get(verl_hooks.SCORE_FEATURES_ENV) == before  # the bench leaves the switch as it found it
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "reward call" not in line}
    assert int(rows["verl's (processor rerun per sample)"][1]) == 128 and int(rows["hook O"][1]) == 0


def _tool_farm(folder: Path, tools: tuple[str, ...]) -> Path:
    """A PATH folder holding only ``tools`` (links to this machine's), e.g. to hide espeak-ng from a script."""
    folder.mkdir()
    for tool in tools:
        os.symlink(shutil.which(tool), folder / tool)
    return folder


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed here (apt-get install espeak-ng)")
def test_stage_espeak_bundle_speaks_as_the_system_one_with_the_system_one_hidden(tmp_path):
    # the GPU image has no espeak-ng: the bundle must work from its own loader, libraries and data
    dest = tmp_path / "espeak"
    proc = subprocess.run(["bash", str(BENCH / "gpu" / "stage_espeak.sh"), str(dest)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "lib" / "libespeak-ng.so.1").is_file() and (dest / "espeak-ng-data" / "phontab").is_file()
    farm = _tool_farm(tmp_path / "path", ("sh", "dirname", "readlink"))  # what the wrapper needs, and no espeak-ng
    env = {**os.environ, "PATH": f"{dest / 'bin'}:{farm}"}
    env.pop("ESPEAK_DATA_PATH", None)
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, env=env).stdout
    assert f"Data at: {dest}/bin/../espeak-ng-data" in version
    speak = ("import sys, hashlib; from r1aqa_plugin.data.synthetic import speech; "
             "assert speech.unavailable_reason() is None; "
             "print(hashlib.sha256(speech.speak('3 4 5', 'de+m3', speed=150, pitch=50).tobytes()).hexdigest())")
    bundled = subprocess.run([sys.executable, "-c", speak], capture_output=True, text=True, env=env)
    system = subprocess.run([sys.executable, "-c", speak], capture_output=True, text=True)
    assert bundled.returncode == 0 and system.returncode == 0, bundled.stderr + system.stderr
    assert bundled.stdout == system.stdout


def test_session_env_puts_the_carried_espeak_on_path_only_when_the_machine_has_none(tmp_path: Path) -> None:
    # benchmarks/gpu/session_env.sh on the GPU image (no espeak-ng): the bundle from stage_espeak.sh goes on PATH
    bundle = tmp_path / "espeak"
    (bundle / "bin").mkdir(parents=True)
    (bundle / "bin" / "espeak-ng").write_text("#!/bin/sh\necho 'eSpeak NG text-to-speech: 1.51  Data at: bundle'\n")
    (bundle / "bin" / "espeak-ng").chmod(0o755)
    farm = _tool_farm(tmp_path / "path", ("dirname", "mkdir"))  # what session_env.sh needs, and no espeak-ng
    script = f'. {BENCH / "gpu" / "session_env.sh"}; echo "PATH=$PATH"; command -v espeak-ng'
    env = {"ESPEAK_BUNDLE": str(bundle), "R1AQA_SITE_READY": "1", "OUT": str(tmp_path / "logs"),
           "WORK": str(tmp_path / "w"), "HOME": str(tmp_path)}
    bash = shutil.which("bash")
    out = subprocess.run([bash, "-c", script], capture_output=True, text=True, env={**env, "PATH": str(farm)})
    assert out.returncode == 0, out.stderr
    assert f"espeak-ng: the carried one ({bundle})" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == str(bundle / "bin" / "espeak-ng")
    # a machine with its own espeak-ng keeps it
    (farm / "espeak-ng").symlink_to(bundle / "bin" / "espeak-ng")
    out = subprocess.run([bash, "-c", script], capture_output=True, text=True, env={**env, "PATH": str(farm)})
    assert out.returncode == 0 and "the carried one" not in out.stdout
    assert out.stdout.strip().splitlines()[-1] == str(farm / "espeak-ng")


def _trace_events() -> list[dict]:
    """A chrome trace as torch writes it on a GPU: verl's stage markers, launches and the kernels they launched."""
    def mark(name, ts, dur):
        return {"ph": "X", "cat": "user_annotation", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": 1}

    def launch(corr, ts):
        return {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts, "dur": 2, "pid": 1, "tid": 1,
                "args": {"correlation": corr}}

    def gpu(corr, name, ts, dur, cat="kernel", stream=7):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": stream,
                "args": {"correlation": corr}}

    return [mark("actor_update", 0, 1000), mark("ref_compute_log_prob", 1000, 500), mark("aten::mm", 5, 10),
            launch(1, 10), gpu(1, "nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NTN", 20, 200),
            launch(2, 15), gpu(2, "ncclDevKernel_AllGather_RING_LL", 100, 200, stream=20),  # overlaps the matmul
            launch(3, 990), gpu(3, "void at::native::vectorized_elementwise_kernel<4>", 1100, 100),  # runs late
            launch(4, 1010), gpu(4, "void at::native::cunn_SoftMaxForward<8>", 1210, 50),
            launch(5, 1020), gpu(5, "Memcpy DtoD (Device -> Device)", 1300, 10, cat="gpu_memcpy"),
            {"ph": "i", "cat": "Trace", "name": "PyTorch Profiler", "ts": 0}]


def test_trace_report_counts_kernels_for_the_stage_that_launched_them(tmp_path: Path) -> None:
    import gzip

    import trace_report

    path = tmp_path / "actor_train_step2_rank0-of-2.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": _trace_events()}, f)
    stages = {s.name: s for s in trace_report.stages_of(trace_report.load_events(path))}
    assert set(stages) == {"actor_update", "ref_compute_log_prob", "(whole trace)"}  # aten::mm is torch's
    assert stages["(whole trace)"].busy_us == 440 and stages["(whole trace)"].by_kind["memcpy"] == 10
    update, ref = stages["actor_update"], stages["ref_compute_log_prob"]
    # busy: the union 20-300 (matmul and NCCL overlap) plus 1100-1200, launched inside the update but run after it
    assert update.busy_us == 380 and dict(update.by_kind) == {"matmul": 200, "nccl": 200, "other": 100}
    assert ref.busy_us == 60 and dict(ref.by_kind) == {"log-softmax": 50, "memcpy": 10}
    text = trace_report.report(path, top=2)
    assert "| actor_update | 0.001 | 0.000 | 38 | 0.000 |" in text
    assert "`nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NTN` | matmul" in text and "Memcpy" not in text  # top 2 only


def test_trace_report_splits_each_micro_batchs_idle_time_into_launch_gaps_and_long_waits(tmp_path: Path) -> None:
    import trace_report

    def ev(cat, name, ts, dur, corr=None, tid=1):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid,
                **({"args": {"correlation": corr}} if corr is not None else {})}

    events = [ev("user_annotation", "actor_update", 0, 3000), ev("user_annotation", "ref_compute_log_prob", 3000, 100),
              ev("user_annotation", "micro_batch0", 0, 100), ev("user_annotation", "micro_batch1", 100, 1900),
              ev("user_annotation", "micro_batch0", 3000, 100),  # the reference pass's own micro-batch 0
              # micro-batch 0: two kernels 5 us apart (a launch gap), a copy overlapping the second: busy 25
              ev("cuda_runtime", "cudaLaunchKernel", 1, 1, 1), ev("kernel", "k", 10, 10, 1, tid=7),
              ev("cuda_runtime", "cudaLaunchKernel", 2, 1, 2), ev("kernel", "k", 25, 10, 2, tid=7),
              ev("cuda_runtime", "cudaMemcpyAsync", 3, 1, 3), ev("gpu_memcpy", "Memcpy", 30, 10, 3, tid=8),
              # micro-batch 1: two kernels 880 us apart (a sync or host work), the second launched late
              ev("cuda_runtime", "cudaLaunchKernel", 105, 1, 4), ev("kernel", "k", 110, 10, 4, tid=7),
              ev("cuda_runtime", "cudaLaunchKernel", 990, 1, 5), ev("kernel", "k", 1000, 30, 5, tid=7),
              ev("cuda_runtime", "cudaLaunchKernel", 3001, 1, 6), ev("kernel", "k", 3010, 50, 6, tid=7)]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    groups = {g.stage: g for g in trace_report.micro_batches_of(trace_report.load_events(path))}
    update, ref = groups["actor_update"], groups["ref_compute_log_prob"]
    assert update.walls_us == [100, 1900] and update.busy_us == [25, 40] and update.kernels == [2, 2]
    assert (update.small_gaps_us, update.large_gaps_us) == (5, 880)
    assert ref.walls_us == [100] and ref.busy_us == [50] and ref.kernels == [1]
    text = trace_report.report(path)
    assert "| actor_update | 2 | 0.001 | 0.000 | 3 | 2 | 10.0 | 0.000 | 0.000 |" in text
    assert "| ref_compute_log_prob | 1 |" in text


def test_trace_report_reads_a_real_torch_profiler_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    import trace_report

    with (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof,
          torch.profiler.record_function("actor_update"), torch.profiler.record_function("mini_batch0")):
        a = torch.randn(64, 64)
        (a @ a).sum()
    prof.export_chrome_trace(str(tmp_path / "cpu.json"))
    assert trace_report.main([str(tmp_path / "cpu.json")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| actor_update", "| mini_batch0"))]
    assert len(rows) == 2 and all(" 0.000 | 0 |" in r for r in rows)  # a CPU-only trace: no GPU time
    assert "| (whole trace) |" in out
    (tmp_path / "bad.json").write_text('{"traceEvents": 3}')
    with pytest.raises(ValueError, match="bad.json: no traceEvents list"):
        trace_report.load_events(tmp_path / "bad.json")


def _composed(variant: str, gpus: int, tmp_path: Path):
    """A variant's main_ppo command composed for real (``--cfg job``) and resolved as verl's TaskRunnerV1.run does
    before any worker reads it: (its arguments, the config, its environment variables)."""
    from omegaconf import OmegaConf

    a = argparse.Namespace(data="D.parquet", model="M", steps=3, logs=str(tmp_path / "logs"), gpus=gpus, extra=[])
    cmd, env = gsb.command(variant, a)
    proc = subprocess.run([*cmd, "--cfg", "job"], capture_output=True, text=True, cwd=tmp_path, timeout=180,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = OmegaConf.create(proc.stdout)
    OmegaConf.resolve(cfg)
    return a, cfg, env


def test_lora1_variant_runs_the_lora_recipe_with_its_optimizer_on_the_gpu(tmp_path: Path) -> None:
    _, cfg, env = _composed("lora1", 1, tmp_path)
    model, actor = cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.actor
    # the variant's +recipe replaces the bench's r1aqa_grpo (two +recipe entries would fail Hydra's composition)
    assert (cfg.trainer.experiment_name, model.lora_rank, actor.optim.lr) == ("r1aqa_grpo_lora", 32, 1e-5)
    assert actor.fsdp_config.optimizer_offload is False and model.enable_gradient_checkpointing is False
    assert cfg.algorithm.rollout_correction.bypass_mode is True and env == {}
    assert (cfg.data.train_batch_size, cfg.actor_rollout_ref.rollout.n, cfg.trainer.n_gpus_per_node) == (16, 8, 1)


def test_wins1acc_reaches_verls_engine_config_with_one_gradient_reduction_a_step(tmp_path: Path) -> None:
    _, cfg, _ = _composed("wins1acc", 1, tmp_path)
    actor = cfg.actor_rollout_ref.actor
    engine = actor.fsdp_config  # the actor's FSDPEngineConfig, as verl's worker builds it from this node
    assert engine.use_no_sync_for_gradient_accumulation is True and engine.offload_policy is True
    assert (actor.strategy, actor.ppo_micro_batch_size_per_gpu) == ("fsdp2", 32)
    # verl's Hydra default is the other way round: without the variant every micro-batch reduces its gradients
    (tmp_path / "plain").mkdir()
    _, plain, _ = _composed("wins1", 1, tmp_path / "plain")
    assert plain.actor_rollout_ref.actor.fsdp_config.use_no_sync_for_gradient_accumulation is False


def test_wins1v_offloads_only_the_optimizer_state_and_streams_it(tmp_path: Path) -> None:
    _, cfg, env = _composed("wins1v", 1, tmp_path)
    actor = cfg.actor_rollout_ref.actor
    assert env == {"R1AQA_OPTIMIZER_STREAM": "1"}  # hook V, read in the FSDP worker
    assert actor.fsdp_config.optimizer_offload is True and actor.fsdp_config.param_offload is False
    assert actor.strategy == "fsdp" and not actor.fsdp_config.offload_policy


def test_wins1fast_is_the_1gpu_line_without_recompute_and_with_half_the_update_micro_batch(tmp_path: Path) -> None:
    _, cfg, env = _composed("wins1fast", 1, tmp_path)
    actor = cfg.actor_rollout_ref.actor
    assert env == {"R1AQA_OPTIMIZER_STREAM": "1", "R1AQA_REF_ON_GPU": "1"}  # train_h200.sh 1's WINS=1 switches
    assert cfg.actor_rollout_ref.model.enable_gradient_checkpointing is False
    assert (actor.ppo_micro_batch_size_per_gpu, actor.ppo_mini_batch_size, actor.fsdp_config.optimizer_offload) == (
        4, 16, True)
    assert cfg.actor_rollout_ref.ref.fsdp_config.model_dtype == "bf16"


def test_wins1liger_is_wins1big_with_verls_liger_switch(tmp_path: Path) -> None:
    _, cfg, env = _composed("wins1liger", 1, tmp_path)
    assert env == {"R1AQA_OPTIMIZER_STREAM": "1", "R1AQA_REF_ON_GPU": "1"}
    assert cfg.actor_rollout_ref.model.use_liger is True  # hook X takes it to Qwen2-Audio's decoder
    assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 16


def test_wins1scatter_is_wins1liger_with_hook_y_off(tmp_path: Path) -> None:
    _, cfg, env = _composed("wins1scatter", 1, tmp_path)
    assert env == {"R1AQA_OPTIMIZER_STREAM": "1", "R1AQA_REF_ON_GPU": "1", "R1AQA_SYNC_FREE_MERGE": "0"}
    assert cfg.actor_rollout_ref.model.use_liger is True


def test_wins1keep8_keeps_the_encoder_and_eight_decoder_layers_through_hook_z(tmp_path: Path) -> None:
    _, cfg, env = _composed("wins1keep8", 1, tmp_path)
    assert env == {"R1AQA_OPTIMIZER_STREAM": "1", "R1AQA_REF_ON_GPU": "1", "R1AQA_ENCODER_RECOMPUTE": "0",
                   "R1AQA_DECODER_KEEP_LAYERS": "8"}
    assert cfg.actor_rollout_ref.model.enable_gradient_checkpointing is True  # hook Z needs verl's checkpointing
    assert cfg.actor_rollout_ref.model.use_liger is True


def test_wins1big_is_wins1vref_with_update_micro_batches_of_16(tmp_path: Path) -> None:
    _, cfg, env = _composed("wins1big", 1, tmp_path)
    actor = cfg.actor_rollout_ref.actor
    assert env == {"R1AQA_OPTIMIZER_STREAM": "1", "R1AQA_REF_ON_GPU": "1"}
    assert cfg.actor_rollout_ref.model.enable_gradient_checkpointing is True  # the recompute stays: memory
    assert (actor.ppo_micro_batch_size_per_gpu, actor.ppo_mini_batch_size, actor.ppo_epochs) == (16, 16, 1)


def test_prof_variant_traces_step_2_of_rank_0_through_verls_profiler(tmp_path: Path) -> None:
    """The ``prof`` variant's overrides, composed by main_ppo and resolved as verl's TaskRunner does, drive verl's
    own torch profiler: rank 0 writes its step-2 trace where ``report_traces`` looks; rank 1 writes none."""
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.profiler import DistProfiler, DistProfilerExtension, ProfilerConfig

    a, cfg, env = _composed("prof", 2, tmp_path)
    assert env == {"R1AQA_REF_ON_GPU": "1"}  # winsfast's, profiled
    assert (cfg.global_profiler.tool, list(cfg.global_profiler.steps)) == ("torch", [2])
    omega = cfg.actor_rollout_ref.actor.profiler  # what ActorRolloutRefWorker reads (engine_workers.py)
    config = omega_conf_to_dataclass(omega, dataclass_type=ProfilerConfig)
    tool = omega_conf_to_dataclass(omega.tool_config[omega.tool])

    class Worker(DistProfilerExtension):
        def __init__(self, rank: int) -> None:
            self.rank = rank
            DistProfilerExtension.__init__(self, DistProfiler(rank=rank, config=config, tool_config=tool,
                                                              save_file_prefix="actor_rollout_ref"))

        @DistProfiler.annotate(color="red", role="actor_update")
        def update(self) -> None:
            import torch
            x = torch.randn(32, 32)
            (x @ x).sum()

    for rank in (0, 1):
        worker = Worker(rank)
        worker.start_profile(role="train", profile_step=2)
        worker.update()
        worker.stop_profile()
    traces = list(gsb.traces_dir("prof", a).glob("*.json.gz"))
    assert len(traces) == 1 and "step2_rank0" in traces[0].name
    summary = gsb.report_traces("prof", a)
    assert summary == tmp_path / "logs" / "trace-prof-2gpu.md" and "| actor_update |" in summary.read_text()
    assert gsb.report_traces("winsfast", a) is None  # no profiler, no summary


def test_profiled_steps_are_left_out_of_the_means(tmp_path: Path) -> None:
    """prof1 profiles step 4 of 4: steps 2-3 are wins1vref's control, and the slow profiled step is not in them."""
    a, cfg, env = _composed("prof1", 1, tmp_path)
    assert env == {"R1AQA_OPTIMIZER_STREAM": "1", "R1AQA_REF_ON_GPU": "1"}  # wins1vref's switches
    assert (cfg.global_profiler.tool, list(cfg.global_profiler.steps)) == ("torch", [4])
    assert cfg.actor_rollout_ref.actor.profiler.enable is True
    assert gsb.profiled_steps(gsb.VARIANTS["prof1"][1]) == {4}
    assert gsb.profiled_steps(gsb.VARIANTS["prof"][1]) == {2}
    # prof1liger is wins1liger plus the profiler on step 4, nothing else
    assert gsb.profiled_steps(gsb.VARIANTS["prof1liger"][1]) == {4}
    assert gsb.VARIANTS["prof1liger"][1] == gsb.VARIANTS["wins1liger"][1] + gsb.profile_overrides(4)
    assert gsb.profiled_steps(gsb.VARIANTS["wins1vref"][1]) == set()
    # steps listed for a profiler that is not on profile nothing
    assert gsb.profiled_steps(["global_profiler.steps=[2]"]) == set()
    steps = [{"step": i, "timing_s/step": t} for i, t in ((1, 100.0), (2, 27.0), (3, 29.0), (4, 60.0))]
    assert gsb.summarize(steps, 1)["timing_s/step"] == pytest.approx(116 / 3)
    s = gsb.summarize(steps, 1, profiled={4})
    assert (s["steps"], s["timing_s/step"]) == (2, pytest.approx(28.0))
    log = tmp_path / "grpo-prof1-1gpu.log"  # `table` finds the profiled step from the log's variant
    log.write_text("".join(f"step:{d['step']} - timing_s/step:{d['timing_s/step']}\n" for d in steps))
    out = tmp_path / "t.json"
    assert gsb.main(["table", str(log), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["grpo-prof1-1gpu"]["timing_s/step"] == pytest.approx(28.0)


def test_grpo7b_samples_stacks_only_when_asked(tmp_path: Path) -> None:
    # python3 stands in for grpo_step_bench.py (and for the ray stop at the end, which records nothing)
    stubs = ('make7b() { :; }\n'
             'python3() { case "$1" in *grpo_step_bench.py) echo "bench $8 ${12} stacks=${R1AQA_STACKS_DIR:-}'
             ' path=${PYTHONPATH%%:*}" >> "$S/calls" ;; esac; }\n'
             'QUEUE_t() { STACKS=1 grpo7b 1 wins1acc; grpo7b 2 wins; }\n')
    calls = _queue_calls(tmp_path, "t", stubs, {})
    stacks = tmp_path / "s" / "grpo-wins1acc-1gpu" / "stacks"
    sampler = BENCH / "stack_sampler"
    assert calls[1].startswith("bench 2 wins stacks= path=") and str(sampler) not in calls[1]
    assert calls[0] == f"bench 1 wins1acc stacks={stacks} path={sampler}"


def test_fsdp_unit_overhead_prints_a_slope_per_wrapping(tmp_path: Path) -> None:
    out = tmp_path / "units.json"
    proc = subprocess.run([sys.executable, str(BENCH / "fsdp_unit_overhead.py"), "--device", "cpu", "--units", "2,6",
                           "--repeats", "2", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| wrap | 2 units, ms | 6 units, ms | us a unit |" in proc.stdout
    rows = {r["wrap"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"plain", "fsdp1", "fsdp2"}
    assert all(r["ms_6"] > 0 for r in rows.values())
    bad = subprocess.run([sys.executable, str(BENCH / "fsdp_unit_overhead.py"), "--units", "6,2"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "fewer first" in bad.stderr


def test_optimizer_stream_bench_prints_each_mode(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    proc = subprocess.run([sys.executable, str(BENCH / "optimizer_stream_bench.py"), "--device", "cpu", "--full-gb",
                           "0.004", "--side-gb", "0.002", "--tensor-mb", "0.5", "--chunk-mb", "1", "--repeats", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| mode | params GB | s a step |" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["params_gb"]) for r in rows] == [("resident", 0.002), ("streamed", 0.002),
                                                           ("overlapped", 0.002), ("streamed", 0.004),
                                                           ("overlapped", 0.004),
                                                           ("streamed, new host buffers", 0.004)]
    assert all(r["seconds"] > 0 and r["moved_gb_per_s"] is None for r in rows)  # on a CPU nothing moves
    assert all(abs(r["host_gb_grown"]) < 0.5 for r in rows)  # a few MB of state: nothing near a leak's size
