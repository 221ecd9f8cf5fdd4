"""Hook P: the actor's audio features travel cut after each clip and give the model the same outputs, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r1aqa_plugin.models.qwen2_audio import feature_window
from r1aqa_plugin.models.qwen2_audio.feature_window import MARGIN, TRIM_ENV, kept_frames, pad_to_window, trim


def test_kept_frames_is_the_last_valid_frame_of_any_row_plus_the_margin():
    mask = np.zeros((3, 3000), np.int32)
    mask[0, :200], mask[1, :301], mask[2, :17] = 1, 1, 1
    assert kept_frames(mask) == 301 + MARGIN
    assert kept_frames(mask[:1], margin=0) == 200
    assert kept_frames(np.ones((1, 3000), np.int32)) == 3000  # a 30 s clip: nothing to cut
    assert kept_frames(np.zeros((1, 3000), np.int32)) == 3000  # no valid frame: left alone
    feats = np.arange(2 * 4 * 10, dtype=np.float32).reshape(2, 4, 10)
    cut, cut_mask = trim(feats, np.array([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0]] * 2), margin=1)
    assert cut.shape == (2, 4, 4) and cut_mask.shape == (2, 4) and cut.flags.c_contiguous
    np.testing.assert_array_equal(cut, feats[..., :4])


def test_padding_back_checks_shapes():
    feats, mask = torch.ones(2, 4, 6), torch.ones(2, 6, dtype=torch.long)
    padded, padded_mask = pad_to_window(feats, mask, 10)
    assert padded.shape == (2, 4, 10) and not padded[..., 6:].any() and padded_mask[:, 6:].sum() == 0
    same = pad_to_window(feats, mask, 6)
    assert same[0] is feats and same[1] is mask
    with pytest.raises(ValueError, match="7 mel frames; the encoder takes at most 6"):
        pad_to_window(torch.ones(1, 4, 7), torch.ones(1, 7), 6)
    with pytest.raises(ValueError, match="feature_attention_mask has 5 frames but input_features 6"):
        pad_to_window(feats, torch.ones(2, 5), 10)


def _batch(processor, seconds: list[float], margin: int = MARGIN):
    """The prompt call's inputs (full 30 s windows) and, per row, the actor's features as hook P cuts them, through
    verl's own data path: the agent loop's per-sample fields into a TensorDict (rows of unequal length become a
    non-tensor stack), a micro-batch selected by index, and ``extract_multi_modal_inputs`` (which zero-pads rows to
    the longest)."""
    from verl.utils.model import extract_multi_modal_inputs
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    rng = np.random.default_rng(3)
    clips = [(0.2 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds]
    text = "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWhich sound?<|im_end|>\n"
    full = processor(text=[text] * len(clips), audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)
    rows = []
    for clip in clips:
        feats = processor.feature_extractor([clip], sampling_rate=16000, return_attention_mask=True,
                                            padding="max_length")
        cut, cut_mask = trim(np.asarray(feats["input_features"]), np.asarray(feats["attention_mask"]), margin)
        rows.append({"multi_modal_inputs": {"input_features": torch.from_numpy(cut),
                                            "feature_attention_mask": torch.from_numpy(cut_mask)},
                     "row": torch.tensor([len(rows)])})
    micro_batch = list_of_dict_to_tensordict(rows)[list(range(len(rows)))]
    return dict(full), extract_multi_modal_inputs(micro_batch.get("multi_modal_inputs"))


def _forward_backward(model, inputs):
    model.zero_grad()
    out = model(**inputs)
    out.logits.pow(2).mean().backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# 2.0 s is 200 mel frames (even), 2.006 s 201 (odd): the odd length reads one frame further (module docstring)
SECONDS = [2.006, 3.0, 2.0]


def test_cut_features_give_the_same_logits_and_gradients_bit_for_bit(model_and_processor):
    model, processor = model_and_processor
    model.train()
    full, cut = _batch(processor, SECONDS)
    assert full["input_features"].shape[-1] == 3000 and cut["input_features"].shape[-1] == 300 + MARGIN
    assert full["feature_attention_mask"].sum(-1).tolist() == [201, 300, 200]
    logits_full, grads_full = _forward_backward(model, full)
    logits_cut, grads_cut = _forward_backward(model, {**full, **cut})
    assert torch.equal(logits_cut, logits_full)
    audio_grads = [n for n in grads_full if "audio_tower" in n]
    assert grads_cut.keys() == grads_full.keys() and len(audio_grads) > 10
    for name in grads_full:
        assert torch.equal(grads_cut[name], grads_full[name]), name


def test_one_frame_of_margin_is_not_enough_for_an_odd_length(model_and_processor):
    """The check above can fail: cut one frame short, the 201-frame clip's last audio token changes."""
    model, processor = model_and_processor
    model.eval()
    full, cut = _batch(processor, SECONDS, margin=1)
    with torch.no_grad():
        logits_full, logits_cut = model(**full).logits, model(**{**full, **cut}).logits
    changed = (logits_full != logits_cut).any(-1)
    assert changed[0].any() and not changed[1:].any()


def test_the_post_rollout_call_cuts_unless_told_not_to(model_and_processor, monkeypatch):
    _, processor = model_and_processor
    clip = np.zeros(16000 * 4, np.float32)
    cut = processor(text=["no placeholder"], audio=[clip], sampling_rate=16000, return_tensors="np")
    assert cut["input_features"].shape[-1] == 400 + MARGIN == cut["feature_attention_mask"].shape[-1]
    monkeypatch.setenv(TRIM_ENV, "0")
    assert not feature_window.trim_enabled()
    whole = processor(text=["no placeholder"], audio=[clip], sampling_rate=16000, return_tensors="np")
    assert whole["input_features"].shape[-1] == 3000
    np.testing.assert_array_equal(whole["input_features"][..., :402], cut["input_features"])


def test_hook_p_and_hook_i_wrappers_keep_the_originals_name_and_signature():
    import inspect

    from r1aqa_plugin.models.qwen2_audio.encoder_dedup import make_encoder_forward

    def forward(self, input_ids=None, input_features=None, attention_mask=None, feature_attention_mask=None, **kw):
        """The original."""

    for make in (feature_window.make_model_forward, make_encoder_forward):
        wrapped = make(forward)
        assert wrapped.__wrapped__ is forward and wrapped.__name__ == "forward" and wrapped.__doc__ == "The original."
        assert inspect.signature(wrapped) == inspect.signature(forward)
