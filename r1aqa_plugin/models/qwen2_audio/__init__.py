"""Qwen2-Audio adapter for verl 0.9.1 + vLLM.

- ``verl_hooks``: the verl-side patches (processor, prompt builder, vLLM placeholders, banned tokens, auto class),
  applied from ``actor_rollout_ref.model.external_lib`` and verl's ``verl.plugins`` entry point.
- ``vllm_plugin``: the vLLM-side weight-name mapping, registered through ``vllm.general_plugins``.
- ``processor``: the processor wrapper verl's agent loop can re-run after rollout.
- ``names``: checkpoint <-> transformers-5 <-> vLLM parameter names, and the special tokens.
- ``builder``: offline checkpoints (tiny for tests, 7B architecture for benchmarks).
"""
