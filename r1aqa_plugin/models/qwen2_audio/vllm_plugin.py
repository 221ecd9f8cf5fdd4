"""vLLM side of the adapter: Qwen2-Audio that also loads transformers-5 parameter names.

Registered through the ``vllm.general_plugins`` entry point, the only hook that reaches vLLM's engine-core and
worker processes. vLLM logs a failing plugin and carries on, so the verl side checks in every worker that this
class is the one that was loaded (see ``verl_hooks``).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

ARCHITECTURE = "Qwen2AudioForConditionalGeneration"
MODEL_CLASS = "r1aqa_plugin.models.qwen2_audio.vllm_model:Qwen2AudioWithV5Names"
_registered = False


def register() -> None:
    """Point vLLM's Qwen2-Audio architecture at the name-mapping subclass (re-entrant, import-light)."""
    global _registered
    from vllm import ModelRegistry

    ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    if not _registered:
        logger.info("r1aqa: vLLM %s -> %s (accepts transformers-5 weight names)", ARCHITECTURE, MODEL_CLASS)
    _registered = True
