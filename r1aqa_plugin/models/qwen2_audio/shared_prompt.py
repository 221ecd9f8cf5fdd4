"""Hook AB: the rows of a GRPO group share one forward pass of their prompt.

GRPO samples several responses to each prompt (R1-AQA: 8), and verl's actor update and reference pass run every
sample as its own row: at R1-AQA's shape (prompts of ~330 tokens with a 10 s clip, 256 new tokens) more than half of
each row is a prompt that the other 7 rows of its group also carry. A decoder token's hidden states depend only on
the tokens before it, so a prefix that rows share, with the same audio and at the same positions, has the same hidden
states in every one of them. This hook packs a micro-batch into one sequence that holds each group's shared prefix
once, followed by each row's own tokens (its response, right-padded to the group's longest), and gives attention a
layout instead of a mask:

- the prefix attends causally to itself;
- each row's own tokens attend to the prefix and causally to themselves (sdpa with a lower-right causal bias, which
  runs the flash or memory-efficient kernel without a materialised mask).

The log-probs and entropies are then read back into verl's layout: every position of every row gets the value it
would have had in its own row (the label after the shared prefix and each row's last label are per row, and are
computed from their own rows of logits). The backward sums the rows' gradients through the shared prefix, which is
the sum verl's separate rows give. What changes is the work: at R1-AQA's shape a micro-batch of 16 rows (2 groups)
drops from ~9,400 tokens to ~4,800 for every matmul of the 7B decoder, and the audio encoder runs once a group.

The hook applies to verl's padded path (``use_remove_padding=False``, the recipes' setting without flash-attn) with
sdpa attention, position ids 0..L-1 and one temperature. Rows share a prefix when their audio inputs are equal and
their first tokens agree for at least ``MIN_SHARED`` tokens covering every audio token; the prefix is the longest the
group has in common (it may run into the responses). A micro-batch where no rows share a prefix keeps verl's inputs.
``R1AQA_SHARED_PROMPT=0`` turns the hook off (for A/B timing).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

logger = logging.getLogger("r1aqa.adapter")

SHARED_ENV = "R1AQA_SHARED_PROMPT"
MIN_SHARED = 16  # tokens: below this a group's prefix saves less than the extra attention calls cost
OUTPUT_KEY = "r1aqa_shared_prompt"


def enabled() -> bool:
    """Whether hook AB is on (``R1AQA_SHARED_PROMPT`` unset or not "0")."""
    return os.environ.get(SHARED_ENV, "1") != "0"


class Group:
    """Rows sharing a prefix: where it starts in the packed sequence, its length, and each row's padded own part."""

    __slots__ = ("rows", "start", "prefix", "suffix")

    def __init__(self, rows: tuple[int, ...], start: int, prefix: int, suffix: int) -> None:
        self.rows, self.start, self.prefix, self.suffix = rows, start, prefix, suffix

    @property
    def end(self) -> int:
        """The packed offset just past this group."""
        return self.start + self.prefix + len(self.rows) * self.suffix

    def __repr__(self) -> str:
        return f"Group(rows={self.rows}, start={self.start}, prefix={self.prefix}, suffix={self.suffix})"


class PackedLayout:
    """What attention needs to know about a packed micro-batch; travels in place of the attention mask.

    A plain class on purpose: FSDP's input casting rebuilds dataclasses and tuples, and leaves other objects alone.
    """

    __slots__ = ("groups", "length")

    def __init__(self, groups: list[Group]) -> None:
        self.groups = tuple(groups)
        self.length = self.groups[-1].end if self.groups else 0

    def __repr__(self) -> str:
        return f"PackedLayout(length={self.length}, groups={len(self.groups)})"


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(a.numel(), b.numel())
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if differ.numel() else n


def _same_audio(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if a is None or b is None or a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if x is y:
            continue
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape
                and x.dtype == y.dtype and torch.equal(x, y.to(x.device))):
            return False
    return True


def plan(rows: list[torch.Tensor], audio: list[Any], audio_token_id: int,
         min_shared: int = MIN_SHARED) -> PackedLayout | None:
    """Group ``rows`` (1-D CPU token ids; ``audio[i]``: row i's audio inputs or None) by shared prefix; None when no
    two rows share one."""
    leaders: list[int] = []
    members: dict[int, list[tuple[int, int]]] = {}  # leader -> [(row, common prefix with the leader)]
    last_audio = []
    for row in rows:
        where = (row == audio_token_id).nonzero()
        last_audio.append(int(where[-1]) + 1 if where.numel() else 0)
    for i, row in enumerate(rows):
        for lead in leaders:
            shared = _common_prefix(rows[lead], row)
            if shared >= max(min_shared, last_audio[lead], last_audio[i]) and _same_audio(audio[lead], audio[i]):
                members[lead].append((i, shared))
                break
        else:
            leaders.append(i)
            members[i] = [(i, row.numel())]
    if all(len(m) == 1 for m in members.values()):
        return None
    groups, start = [], 0
    for lead in leaders:
        group_rows = tuple(i for i, _ in members[lead])
        # every row keeps at least one token of its own, so its last label is its own
        prefix = min(min(shared for _, shared in members[lead]), min(rows[i].numel() for i in group_rows) - 1)
        if len(group_rows) == 1 or prefix < max(last_audio[i] for i in group_rows):
            for i in group_rows:  # alone: its whole row is the "prefix"
                groups.append(Group((i,), start, rows[i].numel(), 0))
                start = groups[-1].end
            continue
        suffix = max(rows[i].numel() for i in group_rows) - prefix
        groups.append(Group(group_rows, start, prefix, suffix))
        start = groups[-1].end
    return PackedLayout(groups)


def packed_inputs(rows: list[torch.Tensor], layout: PackedLayout, pad_token_id: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The packed token ids and position ids ``(1, T)``, and for every position of verl's concatenated rows the
    packed position whose logits it reads (all on the CPU)."""
    ids = torch.full((layout.length,), pad_token_id, dtype=rows[0].dtype)
    positions = torch.zeros(layout.length, dtype=torch.long)
    offsets = [0]
    for row in rows:
        offsets.append(offsets[-1] + row.numel())
    source = torch.empty(offsets[-1], dtype=torch.long)
    for g in layout.groups:
        lead = rows[g.rows[0]]
        ids[g.start:g.start + g.prefix] = lead[:g.prefix]
        positions[g.start:g.start + g.prefix] = torch.arange(g.prefix)
        for j, i in enumerate(g.rows):
            own = g.start + g.prefix + j * g.suffix
            length = rows[i].numel()
            ids[own:own + length - g.prefix] = rows[i][g.prefix:]
            positions[own:own + g.suffix] = torch.arange(g.prefix, g.prefix + g.suffix)
            source[offsets[i]:offsets[i] + g.prefix] = torch.arange(g.start, g.start + g.prefix)
            source[offsets[i] + g.prefix:offsets[i + 1]] = torch.arange(own, own + length - g.prefix)
    return ids[None], positions[None], source


def own_label_positions(rows: list[torch.Tensor], layout: PackedLayout) -> torch.Tensor:
    """Positions of verl's concatenated rows whose label is not the next packed token: the last of the shared prefix
    (its label is each row's own next token) and each row's last (verl's label there is the next row's first)."""
    offsets = [0]
    for row in rows:
        offsets.append(offsets[-1] + row.numel())
    wanted = []
    for g in layout.groups:
        for i in g.rows:
            if g.prefix < rows[i].numel():
                wanted.append(offsets[i] + g.prefix - 1)
            wanted.append(offsets[i + 1] - 1)
    return torch.tensor(sorted(wanted), dtype=torch.long)


def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: PackedLayout,
              scaling: float | None = None, **_: Any) -> tuple[torch.Tensor, None]:
    """sdpa over a packed micro-batch: each prefix causally, each row's own tokens over the prefix and themselves."""
    from torch.nn.attention.bias import causal_lower_right
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    groups_per_head = getattr(module, "num_key_value_groups", 1)
    if groups_per_head > 1:
        key = key.repeat_interleave(groups_per_head, dim=1)
        value = value.repeat_interleave(groups_per_head, dim=1)
    heads, dim = query.shape[1], query.shape[-1]
    pieces = []
    for g in layout.groups:
        a, b = g.start, g.start + g.prefix
        k_pre, v_pre = key[:, :, a:b], value[:, :, a:b]
        pieces.append(sdpa(query[:, :, a:b], k_pre, v_pre, is_causal=True, scale=scaling))
        n = len(g.rows)
        if g.suffix == 0:
            continue

        def per_row(x: torch.Tensor, g: Group = g, b: int = b, n: int = n) -> torch.Tensor:
            return x[0, :, b:g.end].reshape(heads, n, g.suffix, dim).transpose(0, 1)  # (rows, heads, suffix, dim)

        keys = torch.cat([k_pre.expand(n, -1, -1, -1), per_row(key)], dim=2)
        values = torch.cat([v_pre.expand(n, -1, -1, -1), per_row(value)], dim=2)
        out = sdpa(per_row(query), keys, values, attn_mask=causal_lower_right(g.suffix, g.prefix + g.suffix),
                   scale=scaling)
        pieces.append(out.transpose(0, 1).reshape(1, heads, n * g.suffix, dim))
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def make_attention_dispatch(original: Any) -> Any:
    """transformers' sdpa attention, sending packed micro-batches (a ``PackedLayout`` mask) to ``attention``."""

    def sdpa_attention_forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               attention_mask: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(attention_mask, PackedLayout):
            return attention(module, query, key, value, attention_mask, scaling=kwargs.get("scaling"))
        return original(module, query, key, value, attention_mask, *args, **kwargs)

    sdpa_attention_forward.__r1aqa_patched__ = True  # type: ignore[attr-defined]
    return sdpa_attention_forward


_refusals = {"count": 0}


def refused(reason: str) -> None:
    """Count a micro-batch that keeps verl's inputs; log the first."""
    _refusals["count"] += 1
    if _refusals["count"] == 1:
        logger.warning("hook AB: a micro-batch keeps verl's separate rows: %s", reason)


def refusals() -> int:
    """How many micro-batches this process sent as separate rows although the hook was on."""
    return _refusals["count"]


# ------------------------------------------------------------------------------------------ verl's micro-batches
def _flag(micro_batch: Any, key: str, default: Any) -> Any:
    from verl.utils import tensordict_utils as tu

    return tu.get_non_tensor_data(data=micro_batch, key=key, default=default)


def _unsupported(micro_batch: Any, attn_implementation: str | None) -> str:
    from verl.utils.dataset.dataset_utils import DatasetPadMode

    if _flag(micro_batch, "use_remove_padding", True):
        return "use_remove_padding=True (the hook packs verl's padded path only)"
    if _flag(micro_batch, "pad_mode", DatasetPadMode.NO_PADDING) != DatasetPadMode.NO_PADDING:
        return "pad_mode is not NO_PADDING"
    for key in ("use_fused_kernels", "distillation_use_topk", "calculate_sum_pi_squared"):
        if _flag(micro_batch, key, False):
            return f"{key}=True"
    if attn_implementation != "sdpa":
        return f"attention implementation {attn_implementation!r} (the hook needs sdpa)"
    if micro_batch["position_ids"].dim() != 2:
        return "3-D position ids"
    return ""


def _temperature(micro_batch: Any) -> float | None:
    """The micro-batch's one temperature, or None when rows differ."""
    temperature = micro_batch["temperature"]
    if not isinstance(temperature, torch.Tensor):
        return float(temperature)
    values = temperature.float().flatten().cpu()
    return float(values[0]) if bool((values == values[0]).all()) else None


def pack_micro_batch(micro_batch: Any, audio_token_id: int, attn_implementation: str | None
                     ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """verl's ``prepare_model_inputs`` for a micro-batch whose rows share prefixes: the packed model inputs and the
    output arguments ``packed_outputs`` reads; None (verl's own inputs) when nothing is shared or it cannot pack."""
    from verl.utils.model import extract_multi_modal_inputs

    reason = _unsupported(micro_batch, attn_implementation)
    if reason:
        refused(reason)
        return None
    input_ids, position_ids = micro_batch["input_ids"], micro_batch["position_ids"]
    lengths = input_ids.offsets().diff().cpu().tolist()
    rows = list(input_ids.values().cpu().split(lengths))
    expected = torch.cat([torch.arange(n) for n in lengths])
    if not torch.equal(position_ids.values().cpu(), expected):
        refused("position ids are not 0..L-1 in every row")
        return None
    temperature = _temperature(micro_batch)
    if temperature is None:
        refused("rows have different temperatures")
        return None
    multi_modal = micro_batch.get("multi_modal_inputs", None)
    audio = [getattr(entry, "data", entry) for entry in multi_modal] if multi_modal is not None else [None] * len(rows)
    layout = plan(rows, audio, audio_token_id)
    if layout is None:
        return None
    pad_token_id = _flag(micro_batch, "pad_token_id", 0)
    ids, positions, source = packed_inputs(rows, layout, pad_token_id)
    device = input_ids.device
    ids = ids.to(device)
    model_inputs = {"input_ids": ids, "position_ids": positions.to(device),
                    # a dict of masks: transformers' decoder passes each layer its entry without building a mask
                    "attention_mask": {"full_attention": layout, "sliding_attention": layout}}
    if multi_modal is not None:
        model_inputs.update(extract_multi_modal_inputs(audio, indices=[g.rows[0] for g in layout.groups]))
    output_args = {OUTPUT_KEY: layout, "packed_ids": ids[0], "source": source.to(device),
                   "own_labels": own_label_positions(rows, layout).to(device), "temperature_value": temperature,
                   "temperature_is_one": temperature == 1.0,
                   "input_ids_rmpad_rolled": torch.roll(input_ids.values(), shifts=-1, dims=0)}
    return model_inputs, output_args


def packed_outputs(output: Any, output_args: dict[str, Any], micro_batch: Any, entropy_checkpointing: bool
                   ) -> dict[str, Any]:
    """verl's ``prepare_model_outputs`` for a packed micro-batch: log-probs (and entropies) per row, as verl's."""
    from verl.utils import torch_functional as verl_F
    from verl.workers.engine.fsdp import transformer_impl

    logits = output.logits[0]  # (packed tokens, vocab)
    if not output_args["temperature_is_one"]:
        logits = logits / max(output_args["temperature_value"], 1e-8)
    source, own = output_args["source"], output_args["own_labels"]
    logprobs_from_logits = transformer_impl.logprobs_from_logits  # verl's, or hook M's where it loops
    packed = logprobs_from_logits(logits=logits, labels=torch.roll(output_args["packed_ids"], shifts=-1, dims=0),
                                  inplace_backward=False)
    rolled = output_args["input_ids_rmpad_rolled"]
    own_values = logprobs_from_logits(logits=logits[source[own]], labels=rolled[own], inplace_backward=False)
    log_probs = packed[source].index_put((own,), own_values.to(packed.dtype))
    cu_seqlens = micro_batch["input_ids"].offsets()
    model_output = {"log_probs": torch.nested.nested_tensor_from_jagged(log_probs, cu_seqlens)}
    if _flag(micro_batch, "calculate_entropy", False):
        if entropy_checkpointing:
            entropy = torch.utils.checkpoint.checkpoint(verl_F.entropy_from_logits, logits, use_reentrant=False)
        else:
            entropy = verl_F.entropy_from_logits(logits)
        model_output["entropy"] = torch.nested.nested_tensor_from_jagged(entropy[source], cu_seqlens)
    return model_output
