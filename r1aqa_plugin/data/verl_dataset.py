"""The verl dataset class for AQA parquet (``data.custom_cls``): prompt rendering, audio decoding, length filter.

verl builds it for training and validation and hands the same class to its agent loops, which call
``process_multi_modal_info`` to get the audio. Options live under ``data.r1aqa`` in the recipe:

    data:
      r1aqa:
        prompt_template: r1aqa     # r1aqa | r1aqa_think | plain (r1aqa_plugin.prompts)
        channels: first            # R1-AQA keeps channel 0; "mean" downmixes
        long_audio: truncate       # > 30 s: truncate | error | keep (Whisper sees 30 s either way)
        bad_audio: error           # unreadable audio at load time: error (names the row) | skip (counted)

Rows keep the original audio encoding (path or bytes) until an agent loop or the length filter needs samples.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from omegaconf import DictConfig
from verl.utils.dataset.rl_dataset import RLHFDataset

from r1aqa_plugin.audio import (
    SAMPLE_RATE,
    WHISPER_MAX_SECONDS,
    AudioError,
    audio_seconds,
    describe_source,
    load_audio_cached,
)
from r1aqa_plugin.models.qwen2_audio.names import audio_token_count
from r1aqa_plugin.prompts import render_prompt

logger = logging.getLogger("r1aqa.data")

DEFAULT_OPTIONS: dict[str, Any] = {"prompt_template": "r1aqa", "channels": "first", "long_audio": "truncate",
                                   "bad_audio": "error"}


def dataset_options(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``data.r1aqa`` merged over the defaults; unknown keys are an error (typos must not pass silently)."""
    given = dict((config or {}).get("r1aqa", None) or {})
    unknown = set(given) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"data.r1aqa has unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}")
    return {**DEFAULT_OPTIONS, **given}


class AQADataset(RLHFDataset):
    """verl RLHFDataset over AQA parquet rows (question, choices, answer, audios, ...)."""

    def __init__(self, data_files: Any, tokenizer: Any, config: DictConfig, processor: Any = None,
                 max_samples: int = -1) -> None:
        self.options = dataset_options(config)
        render_prompt(self.options["prompt_template"], "q", ["a", "b"])  # unknown template: fail before loading
        if processor is None:
            raise ValueError("AQADataset needs the Qwen2-Audio processor, but verl built none: is "
                             "actor_rollout_ref.model.external_lib=r1aqa_plugin.models.qwen2_audio.verl_hooks set?")
        super().__init__(data_files, tokenizer, config, processor, max_samples)

    # ------------------------------------------------------------------------------------------ rows -> prompts
    def _build_messages(self, example: dict, key: str) -> list[dict]:
        """Render the chat turn from question/choices (audio first, as R1-AQA) unless the row has a prompt."""
        if key not in example or example[key] is None:
            audios = example.get(self.audio_key) or []
            text = render_prompt(self.options["prompt_template"], example["question"], list(example["choices"]))
            example[key] = [{"role": "user", "content": "<audio>" * len(audios) + text}]
        return super()._build_messages(example, key)

    def __getitem__(self, item: int) -> dict:
        row = super().__getitem__(item)
        extra = dict(row.get("extra_info") or {})
        extra.setdefault("choices", list(row["choices"]))  # the rewards need the options (MMAU matcher, letters)
        extra.setdefault("question", row["question"])
        row["extra_info"] = extra
        return row

    # --------------------------------------------------------------------------------------- audio for rollout
    @classmethod
    def _process_multi_modal_info(cls, messages: list[dict], image_patch_size: Any,
                                  config: DictConfig) -> tuple[None, None, list[np.ndarray] | None]:
        opts = dataset_options(config)
        sources = cls._extract_audio_info(messages)
        if sources is None:
            return None, None, None
        # per sample, the n of a GRPO group at once: decoded once per distinct clip
        audios = [load_audio_cached(s, channels=opts["channels"], long_audio=opts["long_audio"]) for s in sources]
        return None, None, audios

    # ------------------------------------------------------------------------------------- the length filter
    def maybe_filter_out_long_prompts(self, dataframe: Any = None) -> Any:
        """Drop prompts over max_prompt_length, counting audio tokens from each clip's header.

        verl's own filter decodes every clip through the processor and counts any exception as "too long"
        (printing one line), so a wrong path can silently empty the dataset; here unreadable audio follows
        ``bad_audio``, every drop is counted and reported, and an emptied dataset is an error.
        """
        if dataframe is None or len(dataframe) == 0:
            raise ValueError(f"{self.data_files}: the dataset has no rows")
        scaffold: dict[int, int] = {}
        reasons: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        keep: list[int] = []
        for i in range(len(dataframe)):
            row = dataframe[i]
            rid = (row.get("extra_info") or {}).get("id", i)
            try:
                n_audio = 0
                for src in row.get(self.audio_key) or []:
                    seconds = audio_seconds(src)
                    if seconds > WHISPER_MAX_SECONDS and self.options["long_audio"] == "error":
                        raise AudioError(f"{describe_source(src)}: {seconds:.1f} s is over {WHISPER_MAX_SECONDS} s")
                    n_audio += audio_token_count(int(min(seconds, WHISPER_MAX_SECONDS) * SAMPLE_RATE))
            except AudioError as exc:
                if self.options["bad_audio"] == "error":
                    raise ValueError(f"{self.data_files}: row {i} (id {rid}): {exc} "
                                     "(set data.r1aqa.bad_audio=skip to drop such rows and count them)") from exc
                reasons["unreadable audio"] += 1
                examples.setdefault("unreadable audio", []).append(f"{rid}: {exc}")
                continue
            text = render_prompt(self.options["prompt_template"], row["question"], list(row["choices"]))
            n_clips = len(row.get(self.audio_key) or [])
            if n_clips not in scaffold:
                scaffold[n_clips] = self._scaffold_tokens(n_clips)
            length = scaffold[n_clips] + len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + n_audio
            if self.filter_overlong_prompts and length > self.max_prompt_length:
                reasons["longer than max_prompt_length"] += 1
                examples.setdefault("longer than max_prompt_length", []).append(f"{rid}: {length} tokens")
                continue
            keep.append(i)
        for reason, count in reasons.items():
            msg = f"{self.data_files}: dropped {count} of {len(dataframe)} rows: {reason}"
            if reason.startswith("longer"):
                msg += f" ({self.max_prompt_length})"
            logger.warning("%s; e.g. %s", msg, "; ".join(examples[reason][:3]))
            print(f"[r1aqa] {msg}; e.g. {'; '.join(examples[reason][:3])}")
        if not keep:
            raise ValueError(f"{self.data_files}: every row was dropped ({dict(reasons)}); raise "
                             f"data.max_prompt_length (now {self.max_prompt_length}) or fix the audio")
        print(f"[r1aqa] {self.data_files}: {len(keep)} of {len(dataframe)} rows kept")
        return dataframe.select(keep) if len(keep) < len(dataframe) else dataframe

    def _scaffold_tokens(self, n_clips: int) -> int:
        """Tokens of the chat scaffold around the question, each clip's ``<|AUDIO|>`` counted as zero."""
        content = [{"type": "audio", "audio": None}] * n_clips + [{"type": "text", "text": ""}]
        scaffold = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False,
                                                      **self.apply_chat_template_kwargs)
        return len(self.tokenizer(scaffold, add_special_tokens=False)["input_ids"]) - n_clips
