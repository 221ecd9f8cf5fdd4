"""The offline tiny Qwen2-Audio: tokenizer ids, processor expansion, transformers load/forward/generate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from r1aqa_plugin.models.qwen2_audio.names import AUDIO_TOKEN_ID, SPECIAL_TOKEN_IDS, audio_token_count


def _tone(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_weights_are_saved_under_the_original_checkpoint_names(tiny_model_dir):
    from safetensors import safe_open

    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"audio_tower", "multi_modal_projector", "language_model"}
    assert "language_model.lm_head.weight" in keys
    assert any(k.startswith("language_model.model.layers.0.") for k in keys)
    assert not any(k.startswith("language_model.model.model.") for k in keys)


def test_tokenizer_has_qwen2_audio_special_tokens_at_their_real_ids(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok("<|AUDIO|>")["input_ids"] == [AUDIO_TOKEN_ID]
    for token, token_id in SPECIAL_TOKEN_IDS.items():
        assert tok.convert_tokens_to_ids(token) == token_id
    # real Qwen2 BPE, not a toy vocabulary
    assert len(tok) == 151649
    assert tok("Hello world")["input_ids"] == [9707, 1879]


def test_chat_template_renders_qwen2_audio_instruct_prompt(tiny_model_dir):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "audio", "audio_url": "x.wav"}, {"type": "text", "text": "Q?"}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nQ?<|im_end|>\n<|im_start|>assistant\n"
    )
    fe = json.loads((tiny_model_dir / "processor_config.json").read_text())["feature_extractor"]
    assert (fe["feature_size"], fe["sampling_rate"], fe["chunk_length"]) == (128, 16000, 30)


@pytest.mark.parametrize("samples", [321, 481, 8000, 16000, 16001, 16161, 48000, 116960, 480000, 672000])
def test_audio_token_count_matches_the_processor(tiny_model_dir, samples):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    wave = _tone(samples / 16000)
    out = proc(text="<|audio_bos|><|AUDIO|><|audio_eos|>", audio=[wave], sampling_rate=16000)
    assert out["input_ids"][0].count(AUDIO_TOKEN_ID) == audio_token_count(len(wave))


def test_tiny_model_loads_in_transformers_and_a_3s_clip_gives_75_audio_tokens(tiny_model_dir):
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "audio", "audio_url": "x"}, {"type": "text", "text": "What?"}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=text, audio=[_tone(3.0)], sampling_rate=16000, return_tensors="pt")
    assert int((inputs["input_ids"] == AUDIO_TOKEN_ID).sum()) == 75
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    gen = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] == inputs["input_ids"].shape[1] + 5 or gen[0, -1].item() in (151643, 151645)


def test_loaded_weights_equal_the_saved_ones(tiny_model_dir):
    """transformers maps the original names onto its v5 modules; nothing is left randomly initialised."""
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2AudioForConditionalGeneration

    from r1aqa_plugin.models.qwen2_audio.names import to_original_name

    saved = load_file(str(tiny_model_dir / "model.safetensors"))
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    state = {to_original_name(k): v for k, v in model.state_dict().items()}
    assert set(state) == set(saved)
    for k in saved:
        assert torch.equal(state[k], saved[k]), k
