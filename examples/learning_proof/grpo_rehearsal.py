"""GRPO rehearsal without verl: the learning-proof recipe's update, in plain torch, to choose a learning rate cheaply.

The lent GPU gives ~20 minutes a session; a learning rate that makes GRPO collapse (lr 1e-3: the format lost in 4
steps, then every reward 0 and no gradient) or crawl (3e-5: nothing in 19 steps) costs a whole session to find out.
This script runs the same algorithm as `recipes/r1aqa_learning_proof.yaml` on the same model and data, on the CPU
or any GPU, in minutes:

- prompts rendered as AQADataset renders them (warmup.prompt_text), 32 prompts x 8 samples a step, temperature 1,
  up to 20 new tokens, stop at <|im_end|>; the reward is the recipe's (`verl_score.compute_score`: R1-AQA's
  accuracy + format) or `--rewards name:weight,...`;
- verl's own GRPO advantage and vanilla PPO loss functions (`verl.trainer.ppo.core_algos`): clip 0.2, dual clip 3,
  against the sampling log-probs (the recipe's bypass mode), seq-mean-token-mean, 4 mini-batches of 8 prompts a
  step, no entropy bonus, no KL unless `--kl-coef` (then verl's k3 KL loss to the frozen starting model);
- AdamW betas (0.9, 0.999), eps 1e-8 (`--adam-eps`), no weight decay, gradient clipping 1.0, lr constant after a linear warm-up
  over the first steps (verl's scheduler steps once per training step).

What differs from verl, on purpose (speed): the Whisper audio tower is frozen and its output cached per clip (as
the learning-proof recipe's `actor.freeze_vision_tower`; `--train-tower` trains it, as verl does without that flag),
and each prompt's 8 samples share one prompt forward (its KV cache expanded, gradients summed), which is the same
function. fp32 on the CPU.

    python examples/learning_proof/grpo_rehearsal.py --model small-warm --data train.parquet \
        --val val.parquet --lr 1e-4 --steps 20 --out rehearsal-1e-4.jsonl
    python examples/learning_proof/grpo_rehearsal.py plot rehearsal-*.jsonl --out rehearsal.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from warmup import load_rows, prompt_text  # noqa: E402  (same rows and prompt rendering as the warm-up)


class Policy:
    """The checkpoint split into frozen cached audio tower + trainable projector and LM (HF modules, fp32)."""

    def __init__(self, model_dir: str, device: str, freeze: tuple[str, ...] = (),
                 tower_cache: dict[str, tuple[list[int], Any]] | None = None, train_tower: bool = False) -> None:
        import torch
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        self.torch, self.device = torch, device
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).to(device)
        inner = self.model.model
        self.tower, self.projector, self.lm = inner.audio_tower, inner.multi_modal_projector, inner.language_model
        self.embed, self.head = inner.get_input_embeddings(), self.model.lm_head
        self.train_tower = train_tower
        if not train_tower:  # trained: the flags as loaded, which verl leaves as they are
            self.tower.requires_grad_(False)
        for name in freeze:
            module = {"lm_head": self.head, "embed_tokens": self.embed, "projector": self.projector}.get(name)
            if module is None:
                raise ValueError(f"--freeze {name!r}: expected lm_head, embed_tokens or projector")
            module.requires_grad_(False)
        self.audio_id = self.model.config.audio_token_id
        self.tok = self.processor.tokenizer
        self.im_end = self.tok.convert_tokens_to_ids("<|im_end|>")
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.im_end
        # Prompt ids and frozen-tower rows per clip; a reference model of the same checkpoint shares its policy's.
        # With a trained tower, the clip's features instead (the tower runs in every forward).
        self._cache: dict[str, tuple[list[int], Any]] = {} if tower_cache is None else tower_cache
        self._features: dict[str, tuple[list[int], Any, Any]] = {}

    def parameters(self) -> list[Any]:
        """What the optimizer trains: everything but the audio tower (unless ``train_tower``)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def tower_rows(self, features: Any, feature_mask: Any, n_audio: list[int]) -> list[Any]:
        """The tower's output rows for each clip's audio tokens, computed as the model computes them (its padding
        mask, its tower), with grad when the tower trains."""
        from transformers.masking_utils import create_bidirectional_mask

        torch = self.torch
        feat_len, _ = self.tower._get_feat_extract_output_lengths(feature_mask.sum(-1))
        rows, _, frames = features.shape
        width = (frames - 2) // 2 + 1
        mask_2d = (torch.arange(width, device=features.device)[None, :] < feat_len[:, None]).long()
        mask = create_bidirectional_mask(config=self.tower.config, attention_mask=mask_2d,
                                         inputs_embeds=torch.zeros((rows, width, 1), device=features.device))
        out = self.tower(features, attention_mask=mask).last_hidden_state
        return [out[i, :n] for i, n in enumerate(n_audio)]

    def audio_rows(self, items: list[dict[str, Any]]) -> list[Any]:
        """Each item's projector input: cached frozen-tower rows, or the trained tower run on the clips now."""
        if not self.train_tower:
            return [self.encode(it)[1] for it in items]
        for it in items:
            self.encode(it)  # fills the feature cache
        feats = [self._features[it["id"]] for it in items]
        torch = self.torch
        return self.tower_rows(torch.cat([f for _, f, _ in feats]).to(self.device),
                               torch.cat([m for _, _, m in feats]).to(self.device),
                               [ids.count(self.audio_id) for ids, _, _ in feats])

    def _processed(self, item: dict[str, Any]) -> dict[str, Any]:
        """The processor's output for the item's prompt (as AQADataset renders it) and clip."""
        text = prompt_text(self.processor, item["question"], item["choices"])
        return self.processor(text=[text], audio=[item["audio"]], sampling_rate=16000, return_tensors="pt")

    def encode(self, item: dict[str, Any]) -> tuple[list[int], Any]:
        """Prompt ids (audio placeholder expanded) and the frozen tower's output rows for its audio tokens, cached
        (with a trained tower: the ids and, for ``audio_rows``, the clip's features; the rows part is None)."""
        torch = self.torch
        if self.train_tower:
            hit_f = self._features.get(item["id"])
            if hit_f is None:
                enc = self._processed(item)
                hit_f = self._features[item["id"]] = (enc["input_ids"][0].tolist(), enc["input_features"],
                                                      enc["feature_attention_mask"])
            return hit_f[0], None
        hit = self._cache.get(item["id"])
        if hit is None:
            enc = self._processed(item)
            ids = enc["input_ids"][0].tolist()
            n_audio = ids.count(self.audio_id)
            # What the model itself feeds its projector (the tower under its padding mask), captured from one
            # ordinary forward rather than re-derived here.
            seen: list[Any] = []
            hook = self.projector.register_forward_pre_hook(lambda _mod, args: seen.append(args[0].detach()))
            try:
                with torch.no_grad():
                    self.model.model(**{k: v.to(self.device) for k, v in enc.items()})
            finally:
                hook.remove()
            out = seen[0][0, :n_audio]
            hit = self._cache[item["id"]] = (ids, out)
        return hit

    def prompt_forward(self, items: list[dict[str, Any]], repeat: int) -> tuple[Any, Any, Any]:
        """Left-padded prompt batch through the LM: last-position logits, KV cache and mask, each repeated."""
        torch = self.torch
        enc = [self.encode(it) for it in items]
        rows = self.audio_rows(items)
        width = max(len(ids) for ids, _ in enc)
        ids = torch.full((len(enc), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for i, (row, _) in enumerate(enc):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        embeds = self.embed(ids)
        audio_rows = torch.cat([self.projector(out) for out in rows])
        embeds = embeds.masked_scatter((ids == self.audio_id).unsqueeze(-1), audio_rows.to(embeds.dtype))
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
        cache = out.past_key_values
        if repeat > 1:
            cache.batch_repeat_interleave(repeat)
        last = self.head(out.last_hidden_state[:, -1]).repeat_interleave(repeat, 0)
        return last, cache, mask.repeat_interleave(repeat, 0)

    def sample(self, items: list[dict[str, Any]], n: int, max_new: int, temperature: float, gen: Any
               ) -> tuple[list[list[int]], list[list[float]]]:
        """n completions per prompt (token ids without the stop token's successors) and their sampling log-probs."""
        torch = self.torch
        with torch.no_grad():
            logits, cache, mask = self.prompt_forward(items, n)
            rows = logits.shape[0]
            done = torch.zeros(rows, dtype=torch.bool, device=self.device)
            toks, lps = [[] for _ in range(rows)], [[] for _ in range(rows)]
            for _ in range(max_new):
                logp = torch.log_softmax(logits.float(), -1)
                if temperature > 0:
                    nxt = torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1, generator=gen)[:, 0]
                else:
                    nxt = logits.argmax(-1)
                chosen = logp.gather(1, nxt[:, None])[:, 0]
                # one device-to-host copy per token, not three per row (each one a CUDA sync on the GPU)
                for r, (tok, lp, finished) in enumerate(zip(nxt.tolist(), chosen.tolist(), done.tolist())):
                    if not finished:
                        toks[r].append(tok)
                        lps[r].append(lp)
                done |= nxt == self.im_end
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=self.device)], 1)
                out = self.lm(inputs_embeds=self.embed(nxt[:, None]), attention_mask=mask, past_key_values=cache,
                              use_cache=True)
                cache, logits = out.past_key_values, self.head(out.last_hidden_state[:, -1])
        return toks, lps

    def logprobs(self, items: list[dict[str, Any]], n: int, toks: list[list[int]]) -> tuple[Any, Any]:
        """Per-token log-probs (with grad) of the given completions, [rows, T], and their mask."""
        torch = self.torch
        first, cache, mask = self.prompt_forward(items, n)
        rows, width = len(toks), max(len(t) for t in toks)
        tgt = torch.full((rows, width), self.pad, dtype=torch.long, device=self.device)
        tmask = torch.zeros((rows, width), dtype=torch.bool, device=self.device)
        for r, t in enumerate(toks):
            tgt[r, : len(t)] = torch.tensor(t)
            tmask[r, : len(t)] = True
        logits = [first[:, None]]
        if width > 1:
            full_mask = torch.cat([mask, tmask[:, :-1].long()], 1)
            out = self.lm(inputs_embeds=self.embed(tgt[:, :-1]), attention_mask=full_mask, past_key_values=cache)
            logits.append(self.head(out.last_hidden_state))
        logp = torch.log_softmax(torch.cat(logits, 1).float(), -1).gather(2, tgt[:, :, None])[:, :, 0]
        return logp, tmask


class _LossConfig(dict):
    """The slice of verl's ActorConfig that its vanilla policy loss reads (clip 0.2, dual clip 3, one rank)."""

    def __init__(self, clip: float = 0.2, clip_c: float = 3.0) -> None:
        super().__init__(clip_ratio_c=clip_c)
        self.clip_ratio, self.clip_ratio_low, self.clip_ratio_high = clip, None, None
        self.global_batch_info: dict[str, Any] = {}


def grpo_advantages(rewards: np.ndarray, n: int) -> np.ndarray:
    """verl's GRPO outcome advantage of each sample: (r - group mean) / (group std + 1e-6)."""
    import torch
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    scores = torch.tensor(rewards, dtype=torch.float32)[:, None]
    adv, _ = compute_grpo_outcome_advantage(scores, torch.ones_like(scores), np.arange(len(rewards)) // n,
                                            epsilon=1e-6, norm_adv_by_std_in_grpo=True)
    return adv[:, 0].numpy()


def ppo_loss(logp: Any, old: Any, adv: Any, mask: Any, ref: Any = None, kl_coef: float = 0.0
             ) -> tuple[Any, dict[str, float]]:
    """verl's vanilla PPO policy loss (clip 0.2, dual clip 3), aggregated seq-mean-token-mean as the recipe, plus
    (kl_coef > 0) verl's k3 KL loss to the reference log-probs ``ref``, as ``actor.use_kl_loss`` adds it."""
    from verl.trainer.ppo.core_algos import agg_loss, compute_policy_loss_vanilla, kl_penalty

    loss, metrics = compute_policy_loss_vanilla(old, logp, adv[:, None].expand_as(logp), mask.float(),
                                                loss_agg_mode="seq-mean-token-mean", config=_LossConfig())
    stats = {"ppo_kl": metrics["actor/ppo_kl"], "clipfrac": metrics["actor/pg_clipfrac"]}
    if kl_coef > 0:
        kl = agg_loss(kl_penalty(logp, ref, "k3"), mask.float(), "seq-mean-token-mean")
        loss = loss + kl_coef * kl
        stats["kl_loss"] = float(kl.detach())
    return loss, stats


class Scored(NamedTuple):
    """One completion scored: the recipe's reward (accuracy + format) and what it is made of."""

    reward: float
    accuracy: float
    in_format: bool
    names_a_choice: bool  # the answer names one of the question's listed choices
    text: str


def parse_rewards(spec: str) -> dict[str, float]:
    """``"r1aqa_accuracy:1,listed_choice_format:1"`` -> ``{name: weight}``, checked as compute_score checks it."""
    from r1aqa_plugin.rewards.verl_score import build_components

    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, weight = item.partition(":")
        try:
            out[name] = float(weight or 1.0)
        except ValueError:
            raise ValueError(f"--rewards: {item!r}: the weight must be a number") from None
    if not out:
        raise ValueError("--rewards: name at least one reward")
    try:
        build_components(out)  # the names registered, the entries valid: compute_score's own check
    except KeyError as err:
        raise ValueError(f"--rewards: {err.args[0]}") from None
    return out


def score(policy: Policy, item: dict[str, Any], toks: list[int], rewards: dict[str, float] | None = None) -> Scored:
    """The reward for one completion (the recipe's by default), its parts, whether it names a listed choice, and the
    text."""
    from r1aqa_plugin.rewards.answer import extract_strict, is_answer_format, resolve_choice
    from r1aqa_plugin.rewards.r1aqa import r1aqa_accuracy
    from r1aqa_plugin.rewards.verl_score import compute_score

    text = policy.tok.decode(toks, skip_special_tokens=True)
    out = compute_score(item["data_source"], text, item["answer"], {"choices": item["choices"]}, rewards=rewards)
    answer = extract_strict(text)
    named = answer is not None and resolve_choice(answer, item["choices"]) is not None
    return Scored(out["score"], r1aqa_accuracy(text, item["answer"], item["choices"]), is_answer_format(text),
                  named, text)


def evaluate(policy: Policy, items: list[dict[str, Any]], max_new: int, batch: int = 32) -> dict[str, float]:
    """Greedy accuracy per task (and the share of outputs in format)."""
    hits: dict[str, list[float]] = {}
    fmt = []
    for i in range(0, len(items), batch):
        chunk = items[i: i + batch]
        toks, _ = policy.sample(chunk, 1, max_new, 0.0, None)
        for it, t in zip(chunk, toks):
            scored = score(policy, it, t)
            hits.setdefault(it["task"], []).append(scored.accuracy)
            fmt.append(scored.in_format)
    out = {f"val/{k}": float(np.mean(v)) for k, v in sorted(hits.items())}
    out["val/format"] = float(np.mean(fmt))
    return out


def batch_order(rows: int, steps: int, prompts: int, rng: Any) -> list[list[int]]:
    """Each step's row indices: a fresh permutation of the rows per epoch, taken ``prompts`` at a time."""
    flat: list[int] = []
    while len(flat) < steps * prompts:
        flat.extend(int(i) for i in rng.permutation(rows))
    return [flat[s * prompts: (s + 1) * prompts] for s in range(steps)]


def read_log(path: str) -> tuple[float | None, list[dict[str, Any]]]:
    """A rehearsal's records and its peak learning rate (None when no step was logged)."""
    recs = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    lrs = [r["lr"] for r in recs if "lr" in r]
    return (max(lrs) if lrs else None), recs


def plot(argv: list[str]) -> int:
    """Training reward, format share and mean greedy validation accuracy vs step, one line per rehearsal log."""
    parser = argparse.ArgumentParser(prog="grpo_rehearsal.py plot", description=plot.__doc__)
    parser.add_argument("logs", nargs="+", help="rehearsal JSON-lines logs")
    parser.add_argument("--out", required=True, help="PNG path")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for path in args.logs:
        lr, recs = read_log(path)
        label = Path(path).stem if lr is None else f"{Path(path).stem} (lr reached {lr:.2g})"
        steps = [r for r in recs if "reward" in r]
        axes[0].plot([r["step"] for r in steps], [r["reward"] for r in steps], label=label)
        axes[1].plot([r["step"] for r in steps], [r["format"] for r in steps], label=label)
        val = [(r["step"], np.mean([v for k, v in r.items() if k.startswith("val/") and k != "val/format"]))
               for r in recs if any(k.startswith("val/") and k != "val/format" for k in r)]
        axes[2].plot([s for s, _ in val], [v for _, v in val], marker="o", label=label)
    for ax, title in zip(axes, ("training reward (accuracy + format)", "share of samples in format",
                                "greedy validation accuracy, mean of tasks")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:
        return plot(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the warmed checkpoint (warmup.py's output)")
    parser.add_argument("--data", required=True, help="training parquet")
    parser.add_argument("--val", default=None, help="validation parquet (greedy accuracy per task)")
    parser.add_argument("--val-rows", type=int, default=96, help="first N validation rows (default 96)")
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--out", required=True, help="JSON-lines log, one record per step")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--warmup-steps", type=int, default=3, help="linear lr warm-up, training steps (default 3)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step (data.train_batch_size)")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt (rollout.n)")
    parser.add_argument("--mini", type=int, default=8, help="prompts per optimizer step (ppo_mini_batch_size)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--kl-coef", type=float, default=0.0,
                        help="k3 KL loss to the starting model (actor.use_kl_loss + kl_loss_coef; 0 = off, the recipe)")
    parser.add_argument("--freeze", default="", help="comma list of lm_head, embed_tokens, projector to freeze too")
    parser.add_argument("--train-tower", action="store_true",
                        help="train the audio tower too, as verl does unless actor.freeze_vision_tower (slower: the "
                             "tower runs in every forward instead of once per clip)")
    parser.add_argument("--adam-eps", type=float, default=1e-8,
                        help="AdamW eps (default 1e-8, the recipe's; as optim.override_optimizer_config.eps)")
    parser.add_argument("--rewards", default="r1aqa_accuracy:1,r1aqa_format:1",
                        help="training reward as name:weight,... of registered rewards (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)
    if args.prompts % args.mini:
        parser.error(f"--prompts {args.prompts} is not a multiple of --mini {args.mini}")
    try:
        reward_spec = parse_rewards(args.rewards)
    except ValueError as err:
        parser.error(str(err))

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    policy = Policy(args.model, device, tuple(x for x in args.freeze.split(",") if x), train_tower=args.train_tower)
    params = policy.parameters()
    # the frozen start model, as verl's reference; same checkpoint and frozen tower, so the same cached tower rows
    # (its own cache when the policy's tower trains)
    reference = (Policy(args.model, device, tower_cache=None if args.train_tower else policy._cache)
                 if args.kl_coef > 0 else None)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=args.adam_eps, weight_decay=0.0)
    train = load_rows(args.data)
    val = load_rows(args.val, args.val_rows) if args.val and args.val_rows > 0 else []
    frozen = ([] if args.train_tower else ["audio tower"]) + [x for x in args.freeze.split(",") if x]
    print(f"[rehearsal] {len(train)} train rows, {len(val)} val rows, lr {args.lr} (warm-up {args.warmup_steps}), "
          f"Adam eps {args.adam_eps:g}, frozen: {', '.join(frozen) or 'nothing'}, "
          f"{args.steps} steps x {args.prompts} prompts x {args.n}, mini-batches of {args.mini}, device {device}, "
          f"reward {' + '.join(f'{w:g} {n}' for n, w in reward_spec.items())}", flush=True)
    order = batch_order(len(train), args.steps, args.prompts, rng)
    t0 = time.perf_counter()
    with open(args.out, "w", encoding="utf-8") as log:
        if val:
            rec = {"step": 0, **evaluate(policy, val, args.max_new_tokens), "s": round(time.perf_counter() - t0, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(f"[rehearsal] {rec}", flush=True)
        for step in range(1, args.steps + 1):
            lr = args.lr * min(1.0, step / args.warmup_steps) if args.warmup_steps > 0 else args.lr
            for g in opt.param_groups:
                g["lr"] = lr
            items = [train[i] for i in order[step - 1]]
            toks, lps = policy.sample(items, args.n, args.max_new_tokens, 1.0, gen)
            scored = [score(policy, items[r // args.n], toks[r], reward_spec) for r in range(len(toks))]
            rewards = np.array([s.reward for s in scored])
            adv = grpo_advantages(rewards, args.n)
            stats: dict[str, list[float]] = {"ppo_kl": [], "clipfrac": [], "grad_norm": [], "kl_loss": []}
            per = args.mini * args.n
            for start in range(0, len(toks), per):
                sl = slice(start, start + per)
                mb_items = items[start // args.n: (start + per) // args.n]
                logp, mask = policy.logprobs(mb_items, args.n, toks[sl])
                old = torch.zeros_like(logp)
                for r, row in enumerate(lps[sl]):
                    old[r, : len(row)] = torch.tensor(row)
                ref = None
                if reference is not None:  # frozen: the same numbers as verl's one reference pass per batch
                    with torch.no_grad():
                        ref, _ = reference.logprobs(mb_items, args.n, toks[sl])
                loss, st = ppo_loss(logp, old, torch.tensor(adv[sl], dtype=logp.dtype, device=device), mask,
                                    ref, args.kl_coef)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
                opt.step()
                stats["ppo_kl"].append(st["ppo_kl"])
                stats["clipfrac"].append(st["clipfrac"])
                if "kl_loss" in st:
                    stats["kl_loss"].append(st["kl_loss"])
                stats["grad_norm"].append(gn)
            rec = {"step": step, "lr": lr, "reward": float(rewards.mean()),
                   "accuracy": float(np.mean([s.accuracy for s in scored])),
                   "format": float(np.mean([s.in_format for s in scored])),
                   "names_a_choice": float(np.mean([s.names_a_choice for s in scored])),
                   "response_length": float(np.mean([len(t) for t in toks])),
                   **{k: float(np.mean(v)) for k, v in stats.items() if v}}
            if val and step % args.val_every == 0:
                rec.update(evaluate(policy, val, args.max_new_tokens))
                # what the policy writes, next to the question's choices and answer (first sample of 3 prompts)
                rec["samples"] = [{"choices": items[k]["choices"], "answer": items[k]["answer"],
                                   "output": scored[k * args.n].text} for k in range(min(3, len(items)))]
            rec["s"] = round(time.perf_counter() - t0, 1)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print("[rehearsal] " + " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in rec.items() if k != "samples"), flush=True)
            for sample in rec.get("samples", []):
                print(f"[rehearsal]   {sample}", flush=True)
            if not math.isfinite(rec["reward"]):
                raise RuntimeError(f"step {step}: reward is not finite")
    return 0


if __name__ == "__main__":
    sys.exit(main())
