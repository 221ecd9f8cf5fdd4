"""Which parameters of Qwen2-Audio share storage, and what FSDP2 wrapping sees (diagnostic for verl's engine)."""
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForMultimodalLM

path = sys.argv[1]
cfg = AutoConfig.from_pretrained(path)
print("transformers", transformers.__version__, "top-level tie:", getattr(cfg, "tie_word_embeddings", "MISSING"),
      "text tie:", cfg.get_text_config().tie_word_embeddings)
m = AutoModelForMultimodalLM.from_pretrained(path, dtype=torch.float32)
seen = {}
for name, p in m.named_parameters(remove_duplicate=False):
    seen.setdefault(p.data_ptr(), []).append(name)
print("shared:", [v for v in seen.values() if len(v) > 1])
print("tied keys:", getattr(m, "_tied_weights_keys", None), "no_split:", m._no_split_modules)
print("devices:", {p.device.type for p in m.parameters()}, {b.device.type for b in m.buffers()})
