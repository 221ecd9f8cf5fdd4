"""Turn a verl FSDP actor checkpoint into a Qwen2-Audio folder that `r1aqa eval` (transformers or vLLM) loads.

    python examples/learning_proof/export_checkpoint.py --actor CKPT/global_step_80/actor --base small-warm --out after

Reads ``model_world_size_1_rank_0.pt`` (one GPU; DTensor shards are turned into plain tensors), loads it into a
model built from ``--base``'s config (strict), and writes bf16 weights under the ORIGINAL Qwen2-Audio names plus
``--base``'s config, processor (80 mel bins) and tokenizer. verl's own HF export is not used: transformers 5
``save_pretrained`` writes names vLLM refuses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from warmup import save_checkpoint  # noqa: E402


def load_actor_state(actor_dir: Path) -> dict[str, Any]:
    """The actor's full state dict (plain CPU tensors, FSDP wrapper prefixes removed)."""
    import torch
    import torch.distributed as dist

    files = sorted(actor_dir.glob("model_world_size_*_rank_*.pt"))
    if len(files) != 1:
        raise SystemExit(f"{actor_dir}: expected one model_world_size_1_rank_0.pt, found {[f.name for f in files]}")
    if not dist.is_initialized():
        # DTensors unpickle against a process group. An in-process store, not a TCP port: two exports side by side
        # (two learning-proof replicates on one host) collided on a fixed port (thirteenth session, EADDRINUSE).
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    state = torch.load(files[0], map_location="cpu", weights_only=False)
    out = {}
    for key, value in state.items():
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        key = key.replace("_fsdp_wrapped_module.", "").replace("_orig_mod.", "")
        out[key] = value.detach().to("cpu")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actor", required=True, help="verl checkpoint folder global_step_N/actor")
    parser.add_argument("--base", required=True, help="the checkpoint GRPO started from (config, processor)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoConfig, Qwen2AudioForConditionalGeneration

    cfg = AutoConfig.from_pretrained(args.base)
    model = Qwen2AudioForConditionalGeneration._from_config(cfg, dtype=torch.float32)
    state = load_actor_state(Path(args.actor))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    save_checkpoint(model, Path(args.base), Path(args.out))
    print(f"wrote {args.out} from {args.actor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
