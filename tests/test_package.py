"""Package-level promises: a light import, a working CLI, and entry points verl/vLLM/Hydra find."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

HEAVY = ("torch", "verl", "vllm", "transformers")


@pytest.mark.parametrize("module", ["r1aqa_plugin", "hydra_plugins.r1aqa_plugin", "r1aqa_plugin.prompts",
                                    "r1aqa_plugin.models.qwen2_audio.names"])
def test_importing_stays_light(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} pulled in {out}"


def test_cli_lists_every_verb_and_each_has_help():
    from r1aqa_plugin.cli import VERBS

    top = subprocess.run([sys.executable, "-m", "r1aqa_plugin.cli", "--help"], capture_output=True, text=True)
    assert top.returncode == 0
    for verb in VERBS:
        assert verb in top.stdout and "unavailable" not in top.stdout
        sub = subprocess.run([sys.executable, "-m", "r1aqa_plugin.cli", verb, "--help"], capture_output=True,
                             text=True)
        assert sub.returncode == 0 and "usage: r1aqa" in sub.stdout, (verb, sub.stderr[-2000:])


def test_entry_points_are_registered_for_verl_and_vllm():
    verl = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="verl.plugins")}
    vllm = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert verl.get("r1aqa_qwen2_audio") == "r1aqa_plugin.models.qwen2_audio.verl_hooks"
    assert vllm.get("r1aqa_qwen2_audio") == "r1aqa_plugin.models.qwen2_audio.vllm_plugin:register"
