"""Hardware floor of one R1-AQA-shaped GRPO step for the Qwen2-Audio architecture (FLOPs and HBM bytes).

    python benchmarks/floor.py [--size 7b] [--prompts 16] [--n 8] [--response 256] [--clip-seconds 10]
                               [--text-tokens 83] [--tflops 790] [--tbps 4.3] [--json floor.json]

Counts come from the architecture (``r1aqa_plugin.models.qwen2_audio.builder.SIZES``), not from a checkpoint:

- parameters exactly (text decoder + Whisper-style audio encoder + projector; tests check the count against a
  meta-device model);
- FLOPs: matmuls 2 x (matmul params) per token (embedding lookups are free, lm_head is not) plus attention scores
  (causal in the decoder, bidirectional in the encoder). Training = 3 forward-equivalents (6 x params x tokens),
  log-prob passes (old, ref) = 1 forward (2 x params x tokens). The audio encoder is counted separately and over
  its padded 30 s window (3000 mel frames -> 1500 positions), because HF Qwen2-Audio always runs it there
  (``Qwen2AudioEncoder.forward`` raises unless the mel length is 3000) and verl gives every sequence its own copy;
- the decode floor: every decode step reads all weights once (shared by the batch) and each sequence's KV cache
  (Qwen2-Audio-7B has 32 KV heads = no GQA: 512 KiB per token in bf16), at ``--tbps`` HBM bandwidth.

All times are GPU-seconds at peak (``--tflops`` dense bf16, ``--tbps``): a floor, not a prediction.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

R1AQA_GPU_SECONDS = 128.0  # 14-18 s per step on 8 x H800 (4-5 h per 1000 steps): 115-145 GPU-s, midpoint ~128
H200_TFLOPS = 790.0        # achievable dense bf16 matmul on one H200 (spec 989)
H200_TBPS = 4.3            # achievable HBM3e bandwidth on one H200 (spec 4.8)
BF16 = 2
SAMPLE_RATE = 16000
HOP = 160                  # Whisper mel hop: 100 frames per second
WINDOW_FRAMES = 3000       # 30 s, what the encoder always receives


def arch(size: str = "7b") -> dict[str, Any]:
    """The shapes of a named size, with the fixed Qwen2-Audio fields filled in."""
    from r1aqa_plugin.models.qwen2_audio.builder import SIZES

    spec = SIZES[size]
    audio = dict(spec["audio"], num_mel_bins=128, max_source_positions=1500)
    text = dict(spec["text"])
    text["head_dim"] = text["hidden_size"] // text["num_attention_heads"]
    return {"audio": audio, "text": text}


@dataclass
class ParamCount:
    text_embed: int
    text_layers: int
    text_norm: int
    lm_head: int
    audio_encoder: int
    audio_pos_embed: int   # frozen sinusoidal table, a parameter in HF's module (counted in the total)
    projector: int

    @property
    def text(self) -> int:
        return self.text_embed + self.text_layers + self.text_norm + self.lm_head

    @property
    def audio(self) -> int:
        return self.audio_encoder + self.audio_pos_embed

    @property
    def total(self) -> int:
        return self.text + self.audio + self.projector


def count_params(size: str = "7b") -> ParamCount:
    """Exact parameter count of Qwen2AudioForConditionalGeneration for a size (untied lm_head)."""
    a, t = arch(size)["audio"], arch(size)["text"]
    d, inter, hd = t["hidden_size"], t["intermediate_size"], t["head_dim"]
    kv = t["num_key_value_heads"] * hd
    q = t["num_attention_heads"] * hd
    attn = d * q + q + 2 * (d * kv + kv) + q * d      # q/k/v have biases, o_proj none
    mlp = 3 * d * inter
    layer = attn + mlp + 2 * d                          # two RMSNorms
    da, fa, mel = a["d_model"], a["encoder_ffn_dim"], a["num_mel_bins"]
    enc_layer = (4 * da * da + 3 * da                    # q, v, out with bias; k without
                 + 2 * da                                # self_attn_layer_norm (LayerNorm w + b)
                 + da * fa + fa + fa * da + da           # fc1, fc2
                 + 2 * da)                               # final_layer_norm
    encoder = (mel * da * 3 + da) + (da * da * 3 + da) + a["encoder_layers"] * enc_layer + 2 * da
    return ParamCount(
        text_embed=t["vocab_size"] * d, text_layers=t["num_hidden_layers"] * layer, text_norm=d,
        lm_head=t["vocab_size"] * d, audio_encoder=encoder, audio_pos_embed=a["max_source_positions"] * da,
        projector=da * d + d)


def audio_tokens(seconds: float) -> int:
    """<|AUDIO|> tokens of a clip (Qwen2-Audio: conv stride 2 then avg-pool 2; 25 per second, 750 for 30 s)."""
    frames = min(math.ceil(seconds * SAMPLE_RATE / HOP), WINDOW_FRAMES)
    after_conv = (frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def text_forward_flops(size: str, seq_len: int) -> float:
    """Forward FLOPs of the decoder (with lm_head on every position) for one sequence of seq_len tokens."""
    t = arch(size)["text"]
    p = count_params(size)
    matmul = p.text_layers - t["num_hidden_layers"] * 2 * t["hidden_size"] + p.lm_head  # norms/biases ~free
    attn = t["num_hidden_layers"] * 2 * seq_len * seq_len * t["num_attention_heads"] * t["head_dim"]  # causal
    return 2.0 * matmul * seq_len + attn


def encoder_forward_flops(size: str, frames: int = WINDOW_FRAMES) -> float:
    """Forward FLOPs of the audio encoder + projector for one clip padded to ``frames`` mel frames."""
    a, t = arch(size)["audio"], arch(size)["text"]
    da, fa, mel, layers = a["d_model"], a["encoder_ffn_dim"], a["num_mel_bins"], a["encoder_layers"]
    pos = frames // 2                                   # conv2 has stride 2
    conv = 2.0 * frames * mel * da * 3 + 2.0 * pos * da * da * 3
    per_layer = 2.0 * pos * (4 * da * da + 2 * da * fa) + 4.0 * pos * pos * da   # bidirectional attention
    projector = 2.0 * (pos // 2) * da * t["hidden_size"]
    return conv + layers * per_layer + projector


@dataclass
class Shape:
    prompts: int = 16
    n: int = 8
    response: int = 256
    clip_seconds: float = 10.0
    text_tokens: int = 83          # chat template + R1-AQA question around one clip: 333 prompt tokens at 10 s

    @property
    def seqs(self) -> int:
        return self.prompts * self.n

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + audio_tokens(self.clip_seconds)

    @property
    def seq_len(self) -> int:
        return self.prompt_tokens + self.response


@dataclass
class Floor:
    size: str
    shape: Shape
    tflops: float
    tbps: float
    params: dict[str, int] = field(default_factory=dict)
    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # component -> {flops, bytes, seconds}

    def seconds(self, *names: str) -> float:
        return sum(self.rows[n]["seconds"] for n in names)


def kv_bytes_per_token(size: str) -> int:
    t = arch(size)["text"]
    return 2 * t["num_hidden_layers"] * t["num_key_value_heads"] * t["head_dim"] * BF16


def decode_floor(size: str, shape: Shape, tbps: float = H200_TBPS) -> dict[str, float]:
    """HBM bytes read over all decode steps: weights once per step + every sequence's KV cache so far."""
    p = count_params(size)
    weight_bytes = (p.text - p.text_embed) * BF16        # embedding rows read per token are negligible
    steps = shape.response
    ctx_sum = shape.seqs * (shape.prompt_tokens * steps + steps * (steps - 1) / 2)
    kv = ctx_sum * kv_bytes_per_token(size)
    total = steps * weight_bytes + kv
    return {"bytes": total, "weight_bytes": steps * weight_bytes, "kv_bytes": kv, "seconds": total / (tbps * 1e12)}


def grpo_floor(size: str = "7b", shape: Shape | None = None, tflops: float = H200_TFLOPS, tbps: float = H200_TBPS,
               *, unique_prefill: bool = True, encoder_frames: int = WINDOW_FRAMES,
               encoder_per: str = "sequence", prompt_per: str = "sequence") -> Floor:
    """Per-component floor of one GRPO step. ``encoder_per='prompt'`` models audio features encoded once per
    prompt instead of once per sequence; ``encoder_frames`` < 3000 models an encoder run on the clip only;
    ``prompt_per='prompt'`` models the decoder's log-prob and update passes running each prompt once per group
    (hook AB), its samples' responses over it."""
    shape = shape or Shape()
    p = count_params(size)
    f = Floor(size=size, shape=shape, tflops=tflops, tbps=tbps,
              params={**asdict(p), "text": p.text, "audio": p.audio, "total": p.total})
    peak = tflops * 1e12

    def add(name: str, flops: float = 0.0, nbytes: float = 0.0, seconds: float | None = None) -> None:
        sec = seconds if seconds is not None else flops / peak + nbytes / (tbps * 1e12)
        f.rows[name] = {"flops": flops, "bytes": nbytes, "seconds": sec}

    text_fwd = shape.seqs * text_forward_flops(size, shape.seq_len)
    if prompt_per == "prompt":  # the responses' share given the prompt: their rows and their attention to it
        prompt_fwd = text_forward_flops(size, shape.prompt_tokens)
        text_fwd = shape.prompts * prompt_fwd + shape.seqs * (text_forward_flops(size, shape.seq_len) - prompt_fwd)
    clips = shape.prompts if encoder_per == "prompt" else shape.seqs
    enc_fwd = clips * encoder_forward_flops(size, encoder_frames)
    # rollout: decode is bandwidth-bound; prefill + encoder are compute-bound (prefix caching: once per prompt)
    d = decode_floor(size, shape, tbps)
    add("rollout decode (HBM)", nbytes=d["bytes"])
    prefill_seqs = shape.prompts if unique_prefill else shape.seqs
    add("rollout prefill + encoder", flops=prefill_seqs * (text_forward_flops(size, shape.prompt_tokens)
                                                           + encoder_forward_flops(size, encoder_frames)))
    add("old log-prob (text)", flops=text_fwd)
    add("old log-prob (encoder)", flops=enc_fwd)
    add("ref log-prob (text)", flops=text_fwd)
    add("ref log-prob (encoder)", flops=enc_fwd)
    add("update fwd+bwd (text)", flops=3 * text_fwd)
    add("update fwd+bwd (encoder)", flops=3 * enc_fwd)
    # memory-bound tails: AdamW reads fp32 param, grad, m, v and writes param, m, v; weight sync writes bf16
    add("optimizer step (HBM)", nbytes=p.total * (4 * 4 + 3 * 4))
    add("weight sync (HBM)", nbytes=p.total * BF16 * 2)
    # not in the floor, listed for comparison: gradient checkpointing recomputes one forward
    f.rows["(grad-ckpt recompute, not in floor)"] = {"flops": text_fwd + enc_fwd, "bytes": 0.0,
                                                     "seconds": (text_fwd + enc_fwd) / peak}
    return f


FLOOR_PARTS = ("rollout decode (HBM)", "rollout prefill + encoder", "old log-prob (text)", "old log-prob (encoder)",
               "ref log-prob (text)", "ref log-prob (encoder)", "update fwd+bwd (text)", "update fwd+bwd (encoder)",
               "optimizer step (HBM)", "weight sync (HBM)")
ROLLOUT_PARTS = FLOOR_PARTS[:2]


def step_floor_seconds(f: Floor, *, old_log_prob: bool = True) -> float:
    parts = [p for p in FLOOR_PARTS if old_log_prob or not p.startswith("old log-prob")]
    return f.seconds(*parts)


def rollout_floor_seconds(f: Floor) -> float:
    return f.seconds(*ROLLOUT_PARTS)


def what_if(size: str = "7b", shape: Shape | None = None, tflops: float = H200_TFLOPS,
            tbps: float = H200_TBPS) -> list[tuple[str, float]]:
    """Step floors under the plugin-controllable changes (GPU-seconds)."""
    shape = shape or Shape()
    frames = min(math.ceil(shape.clip_seconds * 100), WINDOW_FRAMES)
    base = grpo_floor(size, shape, tflops, tbps)
    return [
        ("as verl runs it (encoder per sequence over 30 s, old log-prob recomputed)", step_floor_seconds(base)),
        ("old log-prob skipped (bypass mode)", step_floor_seconds(base, old_log_prob=False)),
        ("+ encoder once per prompt (30 s window)",
         step_floor_seconds(grpo_floor(size, shape, tflops, tbps, encoder_per="prompt"), old_log_prob=False)),
        (f"+ encoder on the clip only ({frames} frames)",
         step_floor_seconds(grpo_floor(size, shape, tflops, tbps, encoder_per="prompt", encoder_frames=frames),
                            old_log_prob=False)),
        ("+ each prompt once per group in the log-prob and update passes (hook AB)",
         step_floor_seconds(grpo_floor(size, shape, tflops, tbps, encoder_per="prompt", encoder_frames=frames,
                                       prompt_per="prompt"), old_log_prob=False)),
    ]


def render(f: Floor) -> str:
    s = f.shape
    p = f.params
    lines = [
        f"Qwen2-Audio {f.size}: {p['total'] / 1e9:.3f} B params (text {p['text'] / 1e9:.3f} B incl. embed "
        f"{p['text_embed'] / 1e9:.3f} B + lm_head {p['lm_head'] / 1e9:.3f} B; audio encoder {p['audio'] / 1e9:.3f} B; "
        f"projector {p['projector'] / 1e6:.1f} M)",
        f"shape: {s.prompts} prompts x {s.n} = {s.seqs} seqs; prompt {s.prompt_tokens} tokens "
        f"({audio_tokens(s.clip_seconds)} audio for {s.clip_seconds:g} s + {s.text_tokens} text), response "
        f"{s.response}; {s.seq_len} tokens/seq; peak {f.tflops:g} TFLOP/s bf16, {f.tbps:g} TB/s",
        f"KV cache {kv_bytes_per_token(f.size) / 1024:.0f} KiB/token; encoder fwd "
        f"{encoder_forward_flops(f.size) / 1e12:.2f} TFLOP per 30 s clip; text fwd "
        f"{text_forward_flops(f.size, s.seq_len) / 1e12:.2f} TFLOP per sequence",
        "",
        f"| {'component':<38} | {'PFLOP':>8} | {'GB moved':>9} | {'GPU-s':>7} |",
        f"|{'-' * 40}|{'-' * 10}:|{'-' * 10}:|{'-' * 8}:|",
    ]
    for name, r in f.rows.items():
        lines.append(f"| {name:<38} | {r['flops'] / 1e15:8.3f} | {r['bytes'] / 1e9:9.1f} | {r['seconds']:7.2f} |")
    full, no_old = step_floor_seconds(f), step_floor_seconds(f, old_log_prob=False)
    lines += [
        "",
        f"rollout floor: {rollout_floor_seconds(f):.2f} GPU-s per batch "
        f"({s.seqs * s.response / rollout_floor_seconds(f):,.0f} tok/s)",
        f"GRPO step floor: {full:.2f} GPU-s (old log-prob skipped: {no_old:.2f}); R1-AQA ~{R1AQA_GPU_SECONDS:.0f} "
        f"GPU-s = {R1AQA_GPU_SECONDS / full:.1f}x the floor",
        "",
        "what-if floors (GPU-s per step):",
    ]
    lines += [f"  {sec:6.2f}  {name}" for name, sec in what_if(f.size, s, f.tflops, f.tbps)]
    return "\n".join(lines)


def to_json(f: Floor) -> dict[str, Any]:
    return {"size": f.size, "shape": asdict(f.shape), "prompt_tokens": f.shape.prompt_tokens,
            "tflops": f.tflops, "tbps": f.tbps, "params": f.params, "rows": f.rows,
            "rollout_floor_s": rollout_floor_seconds(f), "step_floor_s": step_floor_seconds(f),
            "step_floor_no_old_log_prob_s": step_floor_seconds(f, old_log_prob=False),
            "what_if": dict(what_if(f.size, f.shape, f.tflops, f.tbps)), "r1aqa_gpu_s": R1AQA_GPU_SECONDS}


def add_shape_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--size", default="7b")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--response", type=int, default=256)
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--text-tokens", type=int, default=83)
    ap.add_argument("--tflops", type=float, default=H200_TFLOPS)
    ap.add_argument("--tbps", type=float, default=H200_TBPS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_arguments(ap)
    ap.add_argument("--json", help="also write the numbers here")
    a = ap.parse_args(argv)
    shape = Shape(a.prompts, a.n, a.response, a.clip_seconds, a.text_tokens)
    f = grpo_floor(a.size, shape, a.tflops, a.tbps)
    print(render(f))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(to_json(f), fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
