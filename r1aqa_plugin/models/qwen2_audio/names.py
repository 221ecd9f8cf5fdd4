"""Qwen2-Audio names that several modules must agree on: special tokens and parameter-name prefixes.

The released Qwen2-Audio checkpoint, and vLLM's ``Qwen2AudioForConditionalGeneration``, use the ORIGINAL names
(``audio_tower.*``, ``multi_modal_projector.*``, ``language_model.model.*``, ``language_model.lm_head.*``).
transformers 5 renames modules on load (``model.audio_tower.*``, ``model.language_model.*``, ``lm_head.*``), so
verl's FSDP actor pushes those names to vLLM at every weight sync.
"""

from __future__ import annotations

MODEL_TYPE = "qwen2_audio"

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
AUDIO, AUDIO_BOS, AUDIO_EOS = "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"
# Token ids of Qwen2-Audio-7B-Instruct (config.audio_token_index == 151646).
SPECIAL_TOKEN_IDS: dict[str, int] = {
    ENDOFTEXT: 151643,
    IM_START: 151644,
    IM_END: 151645,
    AUDIO: 151646,
    AUDIO_BOS: 151647,
    AUDIO_EOS: 151648,
}
AUDIO_TOKEN_ID = SPECIAL_TOKEN_IDS[AUDIO]
AUDIO_BOS_ID = SPECIAL_TOKEN_IDS[AUDIO_BOS]
AUDIO_EOS_ID = SPECIAL_TOKEN_IDS[AUDIO_EOS]

# transformers-5 module prefix -> original checkpoint prefix (== vLLM's module prefix).
V5_TO_ORIGINAL: tuple[tuple[str, str], ...] = (
    ("model.audio_tower.", "audio_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)


# transformers 5.x ``save_pretrained`` (seen with 5.10.4, 5.17, 5.19; fixed in 5.23) writes the language model
# as ``language_model.model.model.*``; transformers reloads it, vLLM's stock loader does not. verl's ``hf_model``
# checkpoint export goes through save_pretrained, so the vLLM side accepts this prefix too.
SAVE_PRETRAINED_BUG: tuple[str, str] = ("language_model.model.model.", "language_model.model.")


def to_original_name(name: str) -> str:
    """Map a transformers-5 parameter name to the original checkpoint (and vLLM) name; others pass through."""
    for new, old in V5_TO_ORIGINAL:
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def audio_token_count(num_samples: int, hop_length: int = 160, max_frames: int = 3000) -> int:
    """Number of ``<|AUDIO|>`` tokens Qwen2-Audio gives a clip of ``num_samples`` (same rule as HF and vLLM)."""
    frames = min(-(-num_samples // hop_length), max_frames)  # Whisper's mask: ceil(samples / hop), 30 s window
    after_conv = (frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1
