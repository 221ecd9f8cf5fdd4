"""r1aqa-plugin: R1-AQA's GRPO recipe for Qwen2-Audio on verl.

Importing this package is cheap on purpose: it must not import torch, verl or vLLM, because Hydra, verl and
vLLM import pieces of it in every process they start.
"""

__version__ = "0.1.0"
