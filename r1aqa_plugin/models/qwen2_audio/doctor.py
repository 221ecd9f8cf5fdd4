"""`r1aqa doctor`: versions, and the state of every verl/vLLM hook of the Qwen2-Audio adapter.

Imports each patch target (vLLM included) so every hook is really applied, then checks the vLLM plugin resolves
Qwen2-Audio to the name-mapping class. Exits non-zero if anything is missing, changed or untested.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys


def _row(ok: bool | None, name: str, detail: str) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
    return f"  [{mark}] {name:<58} {detail}"


def diagnose() -> tuple[list[str], bool]:
    """Run every check; return the report lines and whether everything is fine."""
    from r1aqa_plugin.models.qwen2_audio import verl_hooks

    lines, healthy = [], True
    versions = {d: verl_hooks._version(d) for d in ("verl", "transformers", "torch", "ray")}
    versions["vllm"] = verl_hooks.installed_vllm_version()
    lines.append("versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items()))
    for problem in verl_hooks.check_versions():
        lines.append(_row(False, "tested versions", problem))
        healthy = False
    if versions["vllm"] is None:
        lines.append(_row(False, "vLLM", "not installed: audio rollouts need vLLM (pip install 'r1aqa-plugin[gpu]')"))
        healthy = False
    try:
        verl_hooks.install()
    except verl_hooks.AdapterError as exc:
        lines.append(_row(False, "install", str(exc)))
        return lines, False
    lines.append("hooks:")
    for patch in verl_hooks.status():
        if patch.state == "pending":
            try:
                importlib.import_module(patch.module)
            except verl_hooks.AdapterError:
                pass  # state/detail already set by the hook
            except ModuleNotFoundError as exc:
                if patch.optional and exc.name is not None and patch.module.startswith(exc.name.split(".")[0]):
                    lines.append(_row(None, f"{patch.hook} {patch.module}.{patch.attr}",
                                      f"not installed: {patch.optional}"))
                    continue
                patch.state, patch.detail = "error", f"cannot import {patch.module}: {exc}"
            except Exception as exc:  # verl raises ValueError, not ImportError, when vLLM is unusable
                patch.state, patch.detail = "error", f"cannot import {patch.module}: {exc}"
        ok = patch.state == "applied"
        healthy &= ok
        lines.append(_row(ok, f"{patch.hook} {patch.module}.{patch.attr}", patch.detail or patch.what))
    lines.append(_actor_class_row())
    lines.extend(_vllm_plugin_rows(versions["vllm"] is not None))
    healthy &= not any("[FAIL]" in line for line in lines)
    return lines, healthy


def _actor_class_row() -> str:
    """The class verl's FSDP engine would build for a Qwen2-Audio config (hook F, end to end)."""
    from transformers import Qwen2AudioConfig
    from verl.utils.model import get_hf_auto_model_class

    config = Qwen2AudioConfig()
    config.architectures = ["Qwen2AudioForConditionalGeneration"]
    auto = get_hf_auto_model_class(config)
    try:
        model_cls = auto._model_mapping[Qwen2AudioConfig]
    except KeyError:
        model_cls = None
    ok = model_cls is not None and model_cls.__name__ == "Qwen2AudioForConditionalGeneration"
    return _row(ok, "F verl actor class for qwen2_audio", f"{auto.__name__} -> {getattr(model_cls, '__name__', None)}")


def _vllm_plugin_rows(have_vllm: bool) -> list[str]:
    from r1aqa_plugin.models.qwen2_audio import vllm_plugin

    eps = [ep for ep in importlib.metadata.entry_points(group="vllm.general_plugins") if ep.value.startswith("r1aqa")]
    rows = [_row(bool(eps), "vllm.general_plugins entry point",
                 eps[0].value if eps else "missing: install the package (pip install -e . or the wheel)")]
    if not have_vllm:
        return rows + [_row(None, "vLLM model class", "vLLM not installed")]
    vllm_plugin.register()
    from vllm import ModelRegistry

    cls = ModelRegistry._try_load_model_cls(vllm_plugin.ARCHITECTURE)
    ok = cls is not None and getattr(cls, "r1aqa_accepts_v5_names", False)
    rows.append(_row(ok, "vLLM Qwen2AudioForConditionalGeneration", f"{cls.__module__}.{cls.__name__}" if cls else "?"))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`r1aqa doctor` takes no arguments."""


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 1 if anything is wrong."""
    lines, healthy = diagnose()
    print("\n".join(lines))
    print("all good" if healthy else "problems found (see FAIL rows)", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1
