"""Recipes compose in verl 0.9.1 and say what they claim; every documented command parses; best-checkpoint logic.

Compositions run in-process through Hydra's compose API (what ``main_ppo --cfg job`` does, ~1 s each) and are
then checked by verl's own ``validate_config`` and config dataclasses. A few run the real ``python -m
verl.trainer.main_ppo ... --cfg job`` in a subprocess: the recipe, an example script, a copied recipe, and
(``integration``) a non-editable wheel install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
EXAMPLES = sorted((REPO / "examples").glob("*.sh"))
PY = sys.executable
R1AQA = str(Path(PY).with_name("r1aqa"))
REQUIRED = ["data.train_files=train.parquet", "data.val_files=val.parquet", "actor_rollout_ref.model.path=model"]


def compose(overrides: list[str]):
    """verl's ppo_trainer config with these overrides, as main_ppo composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        return hydra_compose("ppo_trainer", overrides=overrides)


def check_with_verl(cfg) -> None:
    """What main_ppo runs before Ray starts, plus the dataclasses the workers build (they assert on values)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    omega_conf_to_dataclass(cfg.algorithm)


def main_ppo_cfg_job(args: list[str], cwd: Path, env: dict | None = None, prefix: list[str] | None = None):
    """Run ``python -m verl.trainer.main_ppo ARGS --cfg job`` for real; return the printed config."""
    cmd = (prefix or [PY, "-m", "verl.trainer.main_ppo"]) + args + ["--cfg", "job"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stderr[-3000:]}"
    return OmegaConf.create(proc.stdout)


def header_commands(text: str) -> list[str]:
    """Commands in a file's leading comment: lines indented under '#', with backslash continuations joined."""
    commands, current = [], ""
    for line in text.splitlines():
        if not line.startswith("#"):
            if line.strip() and not line.startswith("defaults") and current == "":
                break
            continue
        body = line[1:]
        if not (body.startswith("   ") or current):
            continue
        body = body.strip()
        current += body[:-1] + " " if body.endswith("\\") else body
        if not body.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return [c for c in commands if c.startswith(("python", "r1aqa", "bash"))]


def fenced_bash(text: str) -> list[str]:
    """Commands in ```bash blocks (continuations joined; comments, pip and apt lines skipped)."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "pip install", "apt", "sudo apt")):
                commands.append(line)
    return commands


def check_command(command: str) -> None:
    """A main_ppo line must compose (and pass verl's checks); an r1aqa line must parse; others are skipped."""
    tokens = shlex.split(command)
    env = {}
    while tokens and re.fullmatch(r"\w+=.*", tokens[0]):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    if tokens[:2] == ["bash", tokens[1]] and re.fullmatch(r"examples/train_\w+\.sh", tokens[1]):
        cfg = main_ppo_cfg_job(tokens[2:], cwd=REPO, env={**os.environ, "PYTHON": PY, **env},
                               prefix=["bash", str(REPO / tokens[1])])
        check_with_verl(cfg)
        return
    if tokens[:3] in (["python", "-m", "verl.trainer.main_ppo"], ["python3", "-m", "verl.trainer.main_ppo"]):
        args = tokens[3:]
        if any(a.startswith("--") for a in args):  # Hydra flags (--config-dir ...): the real entry point
            main_ppo_cfg_job(args, cwd=REPO)
        else:
            check_with_verl(compose(args))
    elif tokens[0] == "r1aqa":
        from r1aqa_plugin.cli import build_parser

        try:
            build_parser().parse_args(tokens[1:])
        except SystemExit as exc:  # argparse exits 2 on a bad option, 0 on --help
            assert exc.code == 0, f"`{command}` does not parse"


# --- every recipe ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_composes_and_passes_verls_own_checks(name):
    cfg = compose([f"+recipe={name}", *REQUIRED])
    check_with_verl(cfg)
    assert cfg.data.custom_cls.name == "AQADataset"
    assert cfg.actor_rollout_ref.model.external_lib == "r1aqa_plugin.models.qwen2_audio.verl_hooks"
    assert cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.limit_mm_per_prompt.audio == 1
    assert cfg.reward.custom_reward_function.name == "compute_score"
    assert cfg.trainer.experiment_name == name


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_is_global_has_a_launch_header_and_variants_only_add_deltas(name):
    text = (REPO / "recipes" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    commands = header_commands(text)
    assert any(f"+recipe={name} " in c for c in commands), f"{name}.yaml's header has no launch command"
    if name != "r1aqa_grpo":
        assert yaml.safe_load(text)["defaults"] == ["r1aqa_grpo", "_self_"]


@pytest.mark.parametrize("name", RECIPES)
def test_every_command_in_a_recipe_header_parses(name, tmp_path):
    for command in header_commands((REPO / "recipes" / f"{name}.yaml").read_text()):
        check_command(command)


def test_r1aqa_grpo_says_what_r1aqa_did():
    cfg = compose(["+recipe=r1aqa_grpo", *REQUIRED])
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert (rollout.n, rollout.temperature, rollout.top_p, rollout.top_k) == (8, 1.0, 1.0, -1)
    assert (rollout.val_kwargs.do_sample, rollout.val_kwargs.n) == (False, 1)
    assert (cfg.data.train_batch_size, cfg.data.max_response_length) == (16, 256)
    assert (actor.ppo_mini_batch_size, actor.ppo_epochs) == (16, 1)  # one update per rollout batch
    assert (actor.use_kl_loss, actor.kl_loss_coef, actor.kl_loss_type) == (True, 0.04, "k3")
    assert actor.loss_agg_mode == "seq-mean-token-mean"
    assert actor.policy_loss.loss_mode == "vanilla" and actor.entropy_coeff == 0.0
    assert (cfg.algorithm.adv_estimator, cfg.algorithm.norm_adv_by_std_in_grpo) == ("grpo", True)
    assert cfg.algorithm.use_kl_in_reward is False
    optim = actor.optim
    assert (optim.optimizer, optim.lr, optim.weight_decay, list(optim.betas)) == ("AdamW", 1e-6, 0.0, [0.9, 0.999])
    assert (optim.override_optimizer_config.eps, optim.clip_grad) == (1e-8, 1.0)
    assert (optim.lr_scheduler_type, optim.min_lr_ratio, optim.lr_warmup_steps_ratio) == ("cosine", 0.0, 0.0)
    t = cfg.trainer
    assert (t.total_training_steps, t.test_freq, t.save_freq) == (1000, 100, 100)
    assert t.checkpoint_callback_class == "r1aqa_plugin.checkpointing.BestMMAUCheckpoint"
    assert list(actor.checkpoint.save_contents) == ["model", "extra", "hf_model"]  # no optimizer, as R1-AQA
    assert (cfg.data.seed, actor.fsdp_config.seed, rollout.seed) == (42, 42, 42)
    assert (cfg.actor_rollout_ref.model.lora_rank, actor.freeze_vision_tower) == (0, False)  # whole model trains
    assert actor.fsdp_config.dtype == "bfloat16"
    assert cfg.data.r1aqa.prompt_template == "r1aqa"
    assert dict(cfg.reward.custom_reward_function.reward_kwargs.rewards) == {"r1aqa_accuracy": 1.0,
                                                                               "r1aqa_format": 1.0}


def test_the_k3_name_is_verls_k3_exactly():
    import torch
    from verl.trainer.ppo.core_algos import kl_penalty

    logp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.0, -0.5])
    expected = torch.exp(ref - logp) - (ref - logp) - 1  # R1-AQA's per-token KL
    assert torch.allclose(kl_penalty(logp, ref, "k3"), expected)


def test_verl_grpo_advantage_is_r1aqas_up_to_epsilon():
    """verl: (r - mean) / (std_unbiased + 1e-6); R1-AQA: the same with 1e-4. Rewards in {0, 1, 2} over 8 samples:
    std is 0 (advantage 0 either way) or >= 0.35, so the two differ by under 0.03 %."""
    import torch
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    scores = torch.tensor([2.0, 1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 0.0])
    rewards = torch.zeros(8, 3)
    rewards[:, -1] = scores
    adv, _ = compute_grpo_outcome_advantage(rewards, torch.ones(8, 3), index=["p"] * 8)
    r1aqa = (scores - scores.mean()) / (scores.std() + 1e-4)
    assert torch.allclose(adv[:, 0], r1aqa, rtol=3e-4)


def variant(name: str):
    return compose([f"+recipe={name}", *REQUIRED])


def test_think_variant_uses_the_think_prompt_and_scores_the_think_format():
    cfg = variant("r1aqa_grpo_think")
    assert cfg.data.r1aqa.prompt_template == "r1aqa_think"
    from r1aqa_plugin.rewards.verl_score import build_components

    weights = {c.name: c.weight for c in build_components(cfg.reward.custom_reward_function.reward_kwargs.rewards)}
    assert weights == {"r1aqa_accuracy": 1.0, "r1aqa_format": 0.0, "r1aqa_think_format": 1.0}


def test_drgrpo_drops_the_std_and_the_per_length_normalisation():
    cfg = variant("r1aqa_drgrpo")
    actor = cfg.actor_rollout_ref.actor
    assert cfg.algorithm.norm_adv_by_std_in_grpo is False
    assert (actor.loss_agg_mode, actor.loss_scale_factor) == ("seq-mean-token-sum-norm", cfg.data.max_response_length)


def test_dapo_clips_higher_filters_flat_groups_and_splits_the_batch():
    cfg = variant("r1aqa_dapo")
    actor = cfg.actor_rollout_ref.actor
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.loss_agg_mode) == (0.2, 0.28, "token-mean")
    assert (cfg.algorithm.filter_groups.enable, cfg.algorithm.filter_groups.metric) == (True, "reward")
    assert actor.use_kl_loss is False
    assert cfg.data.train_batch_size // actor.ppo_mini_batch_size == 4


def test_gspo_uses_sequence_ratios_with_the_papers_clip():
    cfg = variant("r1aqa_gspo")
    actor = cfg.actor_rollout_ref.actor
    assert actor.policy_loss.loss_mode == "gspo"
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.loss_agg_mode) == (3e-4, 4e-4, "seq-mean-token-mean")
    assert cfg.data.train_batch_size // actor.ppo_mini_batch_size == 4


def test_lora_variant_merges_for_vllm_and_peft_leaves_the_audio_encoder_alone(tiny_model_dir):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForMultimodalLM

    import r1aqa_plugin.models.qwen2_audio.verl_hooks  # noqa: F401  (registers the architecture)

    model_cfg = variant("r1aqa_grpo_lora").actor_rollout_ref.model
    assert model_cfg.lora_rank > 0 and model_cfg.lora.merge is True
    model = AutoModelForMultimodalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # the LoraConfig verl's FSDP engine builds (workers/engine/fsdp/transformer_impl.py _build_lora_module)
    peft = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=model_cfg.lora_rank,
                                            lora_alpha=model_cfg.lora_alpha, target_modules=model_cfg.target_modules,
                                            exclude_modules=model_cfg.exclude_modules, bias="none"))
    trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not [n for n in trainable if "audio_tower" in n]
    assert [n for n in trainable if "language_model" in n or ".layers." in n]


@pytest.mark.parametrize(("strategy", "lora"), [("fsdp", True), ("fsdp2", True), ("fsdp", False), ("fsdp2", False)])
def test_weight_sync_sends_names_vllms_loader_takes_and_lora_merged(bare_fsdp_engine, fsdp_engine_support,
                                                                     tiny_model_dir, monkeypatch, strategy, lora):
    """What verl streams to vLLM at every sync, through its real FSDPEngine on one CPU rank: ``_build_module``,
    ``_build_lora_module`` (the LoRA recipe's settings) and ``_build_fsdp_module`` (verl's wrap policy), then
    ``get_per_tensor_param``. Every tensor's name maps onto the checkpoint's through the plugin's vLLM model class
    (FSDP2 is ``grpo_step_bench``'s ``fsdp2fast``); with LoRA each adapted weight is W + (alpha / r) B A, the audio
    encoder is sent untouched, and the base weights are restored after the sync; hook T's out-of-place merge sends
    what verl's in-place merge sends, without calling it. The wrapped module's forward and backward on audio then
    agree with a plain model holding the synced weights."""
    import torch
    from verl.workers.engine.fsdp import transformer_impl

    from r1aqa_plugin.models.qwen2_audio import lora_sync, verl_hooks

    pytest.importorskip("vllm")
    from r1aqa_plugin.models.qwen2_audio.vllm_model import Qwen2AudioWithV5Names

    verl_hooks.install()
    support = fsdp_engine_support
    recipe = variant("r1aqa_grpo_lora").actor_rollout_ref.model
    assert {k: recipe[k] for k in ("lora_rank", "lora_alpha", "target_modules", "exclude_modules")} == {
        k: v for k, v in support.LORA.items() if k != "lora"}  # the support module's copy is the recipe's
    support.steer_to_cpu(monkeypatch.setattr)
    in_place = []  # calls of verl's in-place merge with its host-memory backup
    verls_merge = transformer_impl.merged_lora_context

    def counted(*args, **kwargs):
        in_place.append(1)
        return verls_merge(*args, **kwargs)

    monkeypatch.setattr(transformer_impl, "merged_lora_context", counted)
    engine = bare_fsdp_engine()
    adapters = support.build(engine, str(tiny_model_dir), strategy, support.LORA if lora else None)
    mapper = Qwen2AudioWithV5Names.hf_to_vllm_mapper
    sent_dtypes = set()

    def sync() -> dict:
        sent = support.sync(engine)
        sent_dtypes.update(t.dtype for t in sent.values())
        assert any(mapper._map_name(name) != name for name in sent)  # verl sends transformers-5 names
        return {mapper._map_name(name): tensor.float() for name, tensor in sent.items()}

    loaded = sync()
    checkpoint = support.checkpoint(str(tiny_model_dir))
    assert sorted(loaded) == sorted(checkpoint)
    adapted = support.merged(adapters, mapper)
    # verl casts FSDP2's merged DTensors to bf16 (what vLLM holds): within a bf16 rounding of the merge
    tolerance = {"rtol": 2**-8, "atol": 1e-6} if torch.bfloat16 in sent_dtypes else {"rtol": 0, "atol": 1e-5}
    for name, want in adapted.items():
        torch.testing.assert_close(loaded[name], want, **tolerance, msg=name)
    assert len(adapted) >= (10 if lora else 0) and not [n for n in adapted if "audio_tower" in n]
    for name, tensor in loaded.items():
        if name not in adapted:
            assert torch.equal(tensor, checkpoint[name]), name  # as loaded: the encoder, norms, embeddings
    # the base weights were restored after the sync: a second one sends the same tensors, not B A added twice
    again = sync()
    assert all(torch.equal(again[name], loaded[name]) for name in loaded)
    if lora:  # hook T merged out of place; verl's own in-place merge (hook T off) sends the same, within a rounding
        assert not in_place
        monkeypatch.setenv(lora_sync.OUT_OF_PLACE_ENV, "0")
        by_verl = sync()
        monkeypatch.delenv(lora_sync.OUT_OF_PLACE_ENV)
        assert in_place and sorted(by_verl) == sorted(loaded)
        for name, tensor in by_verl.items():
            torch.testing.assert_close(tensor, loaded[name], rtol=2 * tolerance["rtol"], atol=tolerance["atol"],
                                       msg=name)
    # the actor's forward and backward on audio compute what a plain model with the synced weights computes (under
    # FSDP2 this failed on the H200 until hook S left the encoder's position table to the root unit); one perturbed
    # matrix (0.01 noise) moves this gap to ~0.65
    assert support.forward_gap(engine, support.sync(engine), str(tiny_model_dir)) < 0.1


@pytest.mark.parametrize("mode", ["full", "lora", "lora-in-place"])
def test_fsdp2_on_two_ranks_wraps_qwen2_audio_and_syncs_the_merged_weights(tiny_model_dir, tmp_path, mode):
    """verl's FSDP2 engine on two gloo ranks (tests/support/cpu_fsdp_engine.py): the wrap of Qwen2-Audio, which
    failed without hook S ("Cannot concatenate overlapping meshes"), one forward and backward on audio on both ranks
    (as a plain model with the synced weights computes it), and one weight sync: every name reaches the
    plugin's vLLM loader, the other weights as loaded, and each LoRA weight within a bf16 rounding of W + (alpha/r) B A
    (the projector's with hook T, or with hook Q when verl's own in-place merge runs)."""
    pytest.importorskip("vllm")
    script = REPO / "tests" / "support" / "cpu_fsdp_engine.py"
    proc = subprocess.run([PY, str(script), str(tiny_model_dir), str(tmp_path), mode], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "hook S: FSDP2 wraps its" in proc.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["names_match"] and result["others_as_loaded"] and result["forward_gap"] < 0.1, result
    if mode.startswith("lora"):
        assert result["adapted"] >= 10 and result["worst_relative_error"] <= 2**-7, result
    if mode == "lora":  # hook T covers the projector's adapter with the rest
        assert "hook T: LoRA sync: 15 adapted weights merged out of place" in proc.stdout
    if mode == "lora-in-place":  # verl's own merge (hook T off) reaches it with hook Q
        assert "hook Q: merged 1 LoRA layer(s) of FSDP2's root unit" in proc.stdout
    if mode == "full":
        assert result["adapted"] == 0


def test_tiny_recipe_stays_small():
    cfg = variant("r1aqa_grpo_tiny")
    assert (cfg.trainer.n_gpus_per_node, cfg.trainer.total_training_steps, cfg.actor_rollout_ref.rollout.n) == (1, 5, 4)


# --- the real entry point -------------------------------------------------------------------------------------


def test_main_ppo_composes_the_recipe_in_a_subprocess(tmp_path):
    cfg = main_ppo_cfg_job(["+recipe=r1aqa_grpo", *REQUIRED], cwd=tmp_path)
    assert cfg.actor_rollout_ref.rollout.n == 8 and cfg.trainer.total_training_steps == 1000


def test_a_recipe_copied_into_a_users_folder_runs_with_config_dir(tmp_path):
    """docs/recipes.md: copy, rename, edit, run with --config-dir (its recipe/ subfolder is the group)."""
    (tmp_path / "myconf" / "recipe").mkdir(parents=True)
    text = (REPO / "recipes" / "r1aqa_grpo.yaml").read_text().replace("experiment_name: r1aqa_grpo",
                                                                       "experiment_name: my_r1aqa")
    (tmp_path / "myconf" / "recipe" / "my_r1aqa.yaml").write_text(text.replace("n: 8 ", "n: 6 "))
    cfg = main_ppo_cfg_job(["--config-dir", "myconf", "+recipe=my_r1aqa", *REQUIRED], cwd=tmp_path)
    assert (cfg.trainer.experiment_name, cfg.actor_rollout_ref.rollout.n) == ("my_r1aqa", 6)
    assert cfg.data.custom_cls.name == "AQADataset"
    # a variant of the copy, next to it, inheriting from it
    (tmp_path / "myconf" / "recipe" / "my_think.yaml").write_text(
        "# @package _global_\ndefaults: [my_r1aqa, _self_]\ndata: {r1aqa: {prompt_template: r1aqa_think}}\n")
    cfg = main_ppo_cfg_job(["--config-dir", "myconf", "+recipe=my_think", *REQUIRED], cwd=tmp_path)
    assert (cfg.actor_rollout_ref.rollout.n, cfg.data.r1aqa.prompt_template) == (6, "r1aqa_think")


def copy_source_tree(dest: Path) -> None:
    """Copy the checkout's own files (tracked, or untracked and not ignored) to dest, as a fresh clone has them."""
    # Not copytree(REPO): CI's clone holds its 4 GB .venv, and this copy once filled the CI machine's disk.
    git = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=False)
    if git.returncode != 0:  # not a git checkout (an unpacked sdist): everything but build outputs and venvs
        shutil.copytree(REPO, dest, symlinks=True, ignore=shutil.ignore_patterns(
            ".venv", "venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".gpu-carry", "dist"))
        return
    listed = git.stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_symlink() or (REPO / name).is_file():  # skips a tracked file deleted in the work tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name, follow_symlinks=False)


def pip(*args: str) -> None:
    """Run this venv's pip; on failure, fail with what pip printed."""
    done = subprocess.run([PY, "-m", "pip", *args], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"pip {args[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


@pytest.mark.integration
def test_recipes_compose_from_a_non_editable_wheel(tmp_path):
    src = tmp_path / "src"
    copy_source_tree(src)
    pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w"), str(src))
    wheel = next((tmp_path / "w").glob("r1aqa_plugin-*.whl"))
    site = tmp_path / "site"
    pip("install", "--no-deps", "-q", "--target", str(site), str(wheel))
    assert (site / "r1aqa_plugin" / "recipe" / "r1aqa_grpo.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the venv, whose editable install points at REPO
    probe = "import r1aqa_plugin, hydra_plugins.r1aqa_plugin as h; print(r1aqa_plugin.__file__, h.__file__)"
    out = subprocess.run([PY, "-c", probe], env=env, cwd=elsewhere, capture_output=True, text=True,
                         check=True).stdout
    assert out.count(str(site)) == 2, f"the wheel's packages are not the ones imported: {out}"
    for name in ("r1aqa_grpo", "r1aqa_grpo_tiny", "r1aqa_dapo"):
        cfg = main_ppo_cfg_job([f"+recipe={name}", *REQUIRED], cwd=elsewhere, env=env)
        assert cfg.data.custom_cls.name == "AQADataset"
        assert cfg.data.custom_cls.path == "pkg://r1aqa_plugin.data.verl_dataset"
        assert cfg.actor_rollout_ref.model.external_lib == "r1aqa_plugin.models.qwen2_audio.verl_hooks"
        assert cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.limit_mm_per_prompt.audio == 1
        assert cfg.reward.custom_reward_function.name == "compute_score"


# --- examples/ and README -------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_scripts_are_valid_bash_with_a_usage_header(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert any(c.startswith("bash examples/" + script.name) for c in header_commands(text))
    assert len(text.splitlines()) <= 40, "examples are a recipe plus a few overrides"


def run_example(name: str, args: list[str], cwd: Path, **env):
    full_env = {**os.environ, "PYTHON": PY, "R1AQA": R1AQA, **env}
    return main_ppo_cfg_job(args, cwd=cwd, env=full_env, prefix=["bash", str(REPO / "examples" / name)])


def test_train_8x80gb_runs_the_recipe_on_8_gpus(tmp_path):
    cfg = run_example("train_8x80gb.sh", [], tmp_path)
    check_with_verl(cfg)
    assert (cfg.trainer.n_gpus_per_node, cfg.trainer.experiment_name) == (8, "r1aqa_grpo")
    assert cfg.actor_rollout_ref.actor.fsdp_config.optimizer_offload is False
    cfg = run_example("train_8x80gb.sh", ["trainer.total_training_steps=10"], tmp_path, RECIPE="r1aqa_gspo")
    assert (cfg.trainer.experiment_name, cfg.trainer.total_training_steps) == ("r1aqa_gspo", 10)


@pytest.mark.parametrize("ngpu", [1, 2])
def test_train_h200_places_the_actor_and_keeps_the_maths(tmp_path, ngpu):
    env_seen = tmp_path / "env"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/bash\necho "${{R1AQA_OPTIMIZER_STREAM:-unset}}" > {env_seen}\nexec {PY} "$@"\n')
    python.chmod(0o755)
    cfg = run_example("train_h200.sh", [str(ngpu)], tmp_path, PYTHON=str(python))
    check_with_verl(cfg)
    actor = cfg.actor_rollout_ref.actor
    assert cfg.trainer.n_gpus_per_node == ngpu
    # 2 GPUs: the measured placement (optimizer on the GPUs); 1 GPU: verl's optimizer offload with hook V streaming
    # the AdamW state through the step (verl's offload alone runs out of memory)
    assert (actor.strategy, actor.fsdp_config.offload_policy) == ("fsdp", False)
    assert (actor.fsdp_config.optimizer_offload, env_seen.read_text().strip()) == ((True, "1") if ngpu == 1
                                                                                   else (False, "unset"))
    assert (cfg.data.train_batch_size, actor.ppo_mini_batch_size, cfg.actor_rollout_ref.rollout.n) == (16, 16, 8)
    assert cfg.algorithm.rollout_correction.bypass_mode is False


def bench_variant(name: str) -> list[str]:
    """``benchmarks/grpo_step_bench.py``'s overrides for a variant, later ones winning: what was measured."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import grpo_step_bench
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return grpo_step_bench.merge_overrides(grpo_step_bench.VARIANTS[name][1])


# what the variants set through env: keys
ENV_SWITCHES = ("R1AQA_REF_ON_GPU", "R1AQA_OPTIMIZER_STREAM", "R1AQA_ENCODER_RECOMPUTE", "R1AQA_DECODER_KEEP_LAYERS",
                "R1AQA_SHARED_PROMPT")


HAS_LIGER = importlib.util.find_spec("liger_kernel") is not None
NEEDS_LIGER = pytest.mark.skipif(not HAS_LIGER, reason="the [liger] extra is not installed")


@pytest.mark.parametrize(("ngpu", "env", "variant"),
                         [(2, {"WINS": "1"}, "wins"), (2, {"WINS": "fast"}, "winsfast"),
                          pytest.param(1, {"WINS": "1"}, "wins1shared32", marks=NEEDS_LIGER),
                          pytest.param(1, {"WINS": "1", "MICRO": "16"}, "wins1keep8", marks=NEEDS_LIGER),
                          pytest.param(1, {"WINS": "1", "KEEP": "0", "MICRO": "16"}, "wins1liger", marks=NEEDS_LIGER),
                          (1, {"WINS": "1", "LIGER": "0", "KEEP": "0", "MICRO": "16"}, "wins1big"),
                          (1, {"WINS": "1", "LIGER": "0", "KEEP": "0", "MICRO": "8"}, "wins1vref")])
def test_train_h200_wins_is_the_measured_variant(tmp_path, ngpu, env, variant):
    """WINS=1 / fast set exactly the overrides and environment of the benchmark variant the docs quote (one GPU:
    Liger's kernels when installed, hook Z's 8 kept layers, micro-batches of 32 for hook AB; MICRO=16, KEEP=0,
    LIGER=0 and MICRO=8 give back the variants measured before them)."""
    env_seen = tmp_path / "env"
    python = tmp_path / "python"
    echo = " ".join(f"{v}=${{{v}:-unset}}" for v in ENV_SWITCHES)
    python.write_text(f'#!/bin/bash\necho "{echo}" > {env_seen}\nexec {PY} "$@"\n')
    python.chmod(0o755)
    cfg = run_example("train_h200.sh", [str(ngpu)], tmp_path, PYTHON=str(python), **env)
    check_with_verl(cfg)
    measured = bench_variant(variant)
    seen = dict(kv.split("=", 1) for kv in env_seen.read_text().split())
    for override in measured:
        key, value = override.split("=", 1)
        if key.startswith("env:"):
            assert seen.pop(key[4:]) == value, override
        else:
            assert str(OmegaConf.select(cfg, key.lstrip("+"))) == value, override
    assert set(seen.values()) <= {"unset"}, seen  # no switch the variant did not measure
    assert cfg.actor_rollout_ref.model.use_liger is (variant in ("wins1liger", "wins1keep8", "wins1shared32"))
    assert (cfg.data.train_batch_size, cfg.actor_rollout_ref.rollout.n) == (16, 8)


@pytest.mark.parametrize("liger", ["auto", "1"])
def test_train_h200_without_liger_says_so(tmp_path, liger):
    """Without the [liger] extra, WINS=1 on one GPU says what it costs and goes on; LIGER=1 stops before verl starts."""
    python = tmp_path / "python"  # an interpreter on which liger_kernel does not import
    python.write_text(f'#!/bin/bash\n[ "$*" = "-c import liger_kernel" ] && exit 1\nexec {PY} "$@"\n')
    python.chmod(0o755)
    if liger == "1":
        proc = subprocess.run(["bash", str(REPO / "examples" / "train_h200.sh"), "1"], cwd=tmp_path, check=False,
                              capture_output=True, text=True,
                              env={**os.environ, "WINS": "1", "LIGER": "1", "PYTHON": str(python)})
        assert proc.returncode == 2 and "r1aqa-plugin[liger]" in proc.stderr
        return
    cfg = run_example("train_h200.sh", ["1"], tmp_path, WINS="1", PYTHON=str(python))
    assert cfg.actor_rollout_ref.model.use_liger is False
    assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 32


def test_train_h200_refuses_fast_on_one_gpu_and_unknown_wins(tmp_path):
    for ngpu, env, says in [("1", {"WINS": "fast"}, "needs 2 GPUs"),
                            ("2", {"WINS": "yes"}, "WINS must be 0, 1 or fast"),
                            ("1", {"WINS": "1", "LIGER": "yes"}, "LIGER must be 0, 1 or auto"),
                            ("1", {"WINS": "1", "KEEP": "all"}, "KEEP must be a number of layers")]:
        proc = subprocess.run(["bash", str(REPO / "examples" / "train_h200.sh"), ngpu], cwd=tmp_path, check=False,
                              capture_output=True, text=True, env={**os.environ, **env})
        assert proc.returncode == 2 and says in proc.stderr


def test_train_h200_refuses_other_gpu_counts(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "examples" / "train_h200.sh"), "8"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "train_8x80gb" in proc.stderr


@pytest.mark.parametrize("no_flash", ["0", "1"])
def test_quickstart_gpu_composes_the_tiny_recipe(tmp_path, no_flash):
    work = tmp_path / "qs"
    (work / "tiny-qwen2-audio").mkdir(parents=True)
    (work / "tiny-qwen2-audio" / "config.json").write_text("{}")  # present: the script skips building
    (work / "syn.parquet").write_text("")
    cfg = run_example("quickstart_gpu.sh", [], tmp_path, WORK=str(work), NO_FLASH_ATTN=no_flash)
    assert cfg.trainer.experiment_name == "r1aqa_grpo_tiny"
    assert cfg.actor_rollout_ref.model.path == f"{work}/tiny-qwen2-audio"
    sdpa = cfg.actor_rollout_ref.model.get("override_config", {}).get("attn_implementation")
    assert (sdpa == "sdpa") == (no_flash == "1")
    assert cfg.actor_rollout_ref.model.use_remove_padding is (no_flash == "0")


def test_quickstart_gpu_builds_model_and_data_with_real_cli_options(tmp_path):
    """The two r1aqa lines of the quickstart parse with the real CLI (run, they take minutes on 2 cores)."""
    text = (REPO / "examples" / "quickstart_gpu.sh").read_text()
    lines = [ln.split("|| ", 1)[1] for ln in text.splitlines() if "|| $R1AQA" in ln]
    assert len(lines) == 2
    for line in lines:
        check_command(line.replace("$R1AQA", "r1aqa").replace('"$WORK', '"w'))


def test_prepare_mmau_builds_the_validation_parquet(tmp_path):
    mmau = tmp_path / "MMAU"
    mmau.mkdir()
    shutil.copy(REPO / "tests" / "fixtures" / "data" / "mmau_mini.json", mmau / "mmau-test-mini-v1.json")
    env = {**os.environ, "R1AQA": R1AQA, "DATA": str(tmp_path / "data")}
    subprocess.run(["bash", str(REPO / "examples" / "prepare_mmau.sh"), str(mmau), str(mmau / "mmau-test-mini-v1.json"),
                    "--allow-missing-audio"], env=env, check=True, capture_output=True, timeout=120)
    from r1aqa_plugin.data import read_parquet

    rows = read_parquet(tmp_path / "data" / "mmau-test-mini-v1.parquet")
    assert {r["data_source"].split("/")[0] for r in rows} == {"mmau-test-mini-v1"}


def test_prepare_avqa_builds_the_training_parquet(tmp_path):
    qa = tmp_path / "train_qa.json"
    qa.write_text(json.dumps([{"id": 1, "video_name": "-HG3Omg_89c_000030", "video_id": 11,
                               "question_text": "What happened in the video?",
                               "multi_choice": ["motorboat", "Yacht", "Sailboat", "car"], "answer": 2,
                               "question_relation": "Both", "question_type": "Happening"}]))
    (tmp_path / "wavs").mkdir()
    env = {**os.environ, "R1AQA": R1AQA, "DATA": str(tmp_path / "data")}
    subprocess.run(["bash", str(REPO / "examples" / "prepare_avqa.sh"), str(qa), str(tmp_path / "wavs"),
                    "--allow-missing-audio"], env=env, check=True, capture_output=True, timeout=120)
    from r1aqa_plugin.data import read_parquet

    rows = read_parquet(tmp_path / "data" / "avqa-train.parquet")
    assert len(rows) == 1 and "audio" in rows[0]["question"]


DOCS = [REPO / "README.md", REPO / "docs" / "recipes.md", REPO / "docs" / "recipe-mapping.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_in_the_docs_parses(doc):
    if not doc.exists():
        pytest.skip(f"{doc.name} not written yet")
    for command in fenced_bash(doc.read_text()):
        check_command(command)


# --- best checkpoint ------------------------------------------------------------------------------------------


def val_metrics(sound: float, music: float, speech: float) -> dict[str, float]:
    return {"val-core/mmau-test-mini/sound/acc/mean@1": sound, "val-core/mmau-test-mini/music/acc/mean@1": music,
            "val-core/mmau-test-mini/speech/acc/mean@1": speech, "val-aux/mmau-test-mini/sound/score/mean@1": 9.0}


class FakeTrainer:
    """The part of verl 0.9.1's PPOTrainer the callback touches: global_steps and _validate()."""

    def __init__(self, results: dict[int, dict]):
        self.global_steps = 0
        self.results = results

    def _validate(self) -> dict:
        return self.results[self.global_steps]


def run_fit(callback, trainer, root: Path, steps: list[int], save_freq: int, test_freq: int) -> None:
    """verl's fit() order: step N -> save N (-> on_save) -> validate N."""
    for step in steps:
        trainer.global_steps = step
        if step % save_freq == 0:
            ckpt = root / f"global_step_{step}"
            ckpt.mkdir(parents=True)
            callback.on_save(trainer=trainer, global_step=step, checkpoint_dir=str(ckpt), async_save=False)
        if step % test_freq == 0:
            trainer._validate()


def test_best_checkpoint_follows_validation_accuracy(tmp_path):
    from r1aqa_plugin.checkpointing import BestMMAUCheckpoint

    root = tmp_path / "ckpt"
    config = OmegaConf.create({"trainer": {"default_local_dir": str(root)}})
    results = {100: val_metrics(0.6, 0.5, 0.4), 200: val_metrics(0.7, 0.6, 0.5), 300: val_metrics(0.7, 0.6, 0.4)}
    callback = BestMMAUCheckpoint(config)
    run_fit(callback, FakeTrainer(results), root, [50, 100, 150, 200, 250, 300], save_freq=100, test_freq=100)
    assert os.readlink(root / "best") == "global_step_200"
    best = json.loads((root / "best_checkpoint.json").read_text())
    assert best["step"] == 200 and best["score"] == pytest.approx(0.6)
    history = [json.loads(line) for line in (root / "val_accuracy.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [100, 200, 300]
    # a resumed run keeps the old best unless it is beaten
    callback = BestMMAUCheckpoint(config)
    run_fit(callback, FakeTrainer({400: val_metrics(0.6, 0.6, 0.6), 500: val_metrics(0.8, 0.7, 0.6)}), root,
            [400, 500], save_freq=100, test_freq=100)
    assert os.readlink(root / "best") == "global_step_500"


def test_a_validation_without_a_checkpoint_of_its_step_is_logged_not_chosen(tmp_path):
    from r1aqa_plugin.checkpointing import BestMMAUCheckpoint

    root = tmp_path / "ckpt"
    callback = BestMMAUCheckpoint(OmegaConf.create({"trainer": {"default_local_dir": str(root)}}))
    results = {50: val_metrics(0.9, 0.9, 0.9), 100: val_metrics(0.5, 0.5, 0.5), 150: val_metrics(0.9, 0.9, 0.9)}
    run_fit(callback, FakeTrainer(results), root, [50, 100, 150], save_freq=100, test_freq=50)
    assert os.readlink(root / "best") == "global_step_100"
    assert len((root / "val_accuracy.jsonl").read_text().splitlines()) == 2  # step 50 ran before any save


def test_best_saved_validation_scores_a_subset_of_sources_from_the_callbacks_history(tmp_path):
    from r1aqa_plugin.checkpointing import BestMMAUCheckpoint, best_saved_validation

    root = tmp_path / "ckpt"
    callback = BestMMAUCheckpoint(OmegaConf.create({"trainer": {"default_local_dir": str(root)}}))
    # step 100: sound best; step 200: music best and the best mean of saved steps; step 250 is best but not saved
    results = {100: val_metrics(0.9, 0.2, 0.5), 200: val_metrics(0.3, 0.8, 0.8), 250: val_metrics(0.9, 0.9, 0.9)}
    run_fit(callback, FakeTrainer(results), root, [100, 200, 250], save_freq=100, test_freq=50)
    sound, music = (best_saved_validation(root, [s]) for s in ("sound", "music"))
    assert sound["step"] == 100 and sound["score"] == pytest.approx(0.9)
    assert music["step"] == 200 and music["score"] == pytest.approx(0.8)
    assert best_saved_validation(root)["step"] == 200  # every source: the callback's own score and link
    assert os.readlink(root / "best") == "global_step_200"
    with pytest.raises(ValueError, match=r"val_accuracy.jsonl:1: no validation source matches \['beep'\]"):
        best_saved_validation(root, ["beep"])
    assert best_saved_validation(tmp_path / "nothing") is None


def test_validation_metrics_without_acc_are_an_error():
    from r1aqa_plugin.checkpointing import validation_accuracy

    with pytest.raises(ValueError, match="acc/mean@N"):
        validation_accuracy({"val-core/x/reward/mean@1": 1.0})


def test_verl_builds_the_callback_named_in_the_recipe(tmp_path):
    from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback

    from r1aqa_plugin.checkpointing import BestMMAUCheckpoint

    cfg = compose(["+recipe=r1aqa_grpo", *REQUIRED, f"trainer.default_local_dir={tmp_path}"])
    assert isinstance(build_checkpoint_callback(cfg), BestMMAUCheckpoint)


def test_verl_still_saves_before_it_validates():
    """The callback relies on fit()'s order (save N, then validate N) and on PPOTrainer._validate(self).

    Read as text: importing the v1 trainer needs TransferQueue, which the CPU test environment lacks.
    """
    import verl

    source = (Path(verl.__file__).parent / "trainer" / "ppo" / "v1" / "trainer_base.py").read_text()
    fit = source[source.index("    def fit(self"):]
    assert fit.index("self._save_checkpoint()") < fit.index("val_metrics: dict = self._validate()")
    assert "    def _validate(self) -> dict[str, float]:" in source
    assert "self.checkpoint_callback.on_save(" in source and "self.global_steps += 1" in fit
