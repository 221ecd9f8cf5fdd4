"""MMAU-style evaluation: the official scorer, HF and vLLM generation backends, robustness probes, the report.

Kept import-light: `r1aqa eval` imports the heavy parts (torch, transformers, vllm) only when it runs.
"""
