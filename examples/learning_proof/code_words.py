"""Code-word questions: the same synthetic-aqa audio and question, with every option renamed to a code word.

The learning proof's listening warm-up (warmup.py --listen-share) teaches the random LM to read the audio on
these code-word rows, with the CORRECT code as the target, while the real rows keep random targets. The mapping
option -> code is fixed and arbitrary (a seeded shuffle), so nothing in the warm-up ties an audio clip to a real
option's words: the model learns to listen (what an audio LLM's pretraining gives it), and GRPO still has to learn
which real answer each sound means. `r1aqa eval` on a code-word copy of the test set measures the listening.

    python examples/learning_proof/code_words.py test.parquet test-codes.parquet
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

# Each is one token after ">" in the Qwen2 tokenizer (so one answer token, like most real options' first token),
# and none is an option of any synthetic task.
CODE_WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "red", "blue", "green", "gold", "pink",
              "gray", "orange", "east", "west", "lambda", "echo", "amber", "ruby", "lime", "mint", "silver",
              "tiger", "river", "stone", "cloud", "moon", "wolf", "hawk", "iron")


def code_map() -> dict[str, str]:
    """Every synthetic-aqa option -> its code word (fixed: sorted options, codes in a seed-0 shuffle)."""
    import r1aqa_plugin.data.synthetic  # noqa: F401  (registers the tasks)
    from r1aqa_plugin.data.synthetic.tasks import TASKS

    options = sorted({o for t in TASKS.values() for o in t.options})
    if len(options) > len(CODE_WORDS):
        raise ValueError(f"{len(options)} synthetic options but only {len(CODE_WORDS)} code words")
    clash = set(options) & set(CODE_WORDS)
    if clash:
        raise ValueError(f"code words {sorted(clash)} are also synthetic options")
    codes = [CODE_WORDS[i] for i in np.random.default_rng(0).permutation(len(CODE_WORDS))[: len(options)]]
    return dict(zip(options, codes))


def encode_row(choices: list[str], answer: str, codes: dict[str, str], where: str = "row") -> tuple[list[str], str]:
    """A row's choices and answer in code words; unknown options are an error naming the row."""
    missing = [c for c in [*choices, answer] if c not in codes]
    if missing:
        raise ValueError(f"{where}: options {missing} have no code word (code words cover synthetic-aqa only)")
    return [codes[c] for c in choices], codes[answer]


def convert(src: str, dst: str) -> int:
    """Write a code-word copy of an AQA parquet (choices and answer renamed; audio, question, ids kept)."""
    import pandas as pd

    df = pd.read_parquet(src)
    codes = code_map()
    new_choices, new_answers = [], []
    for i, rec in enumerate(df.to_dict("records")):
        ch, ans = encode_row([str(c) for c in rec["choices"]], str(rec["answer"]), codes,
                             f"{src} row {i} ({rec['extra_info'].get('id', '?')})")
        new_choices.append(ch)
        new_answers.append(ans)
    # the reward's ground truth is the answer too: verl scores against reward_model.ground_truth
    rewards = [{**dict(rm), "ground_truth": a} for rm, a in zip(df["reward_model"], new_answers)]
    df = df.assign(choices=new_choices, answer=new_answers, reward_model=rewards)
    df.to_parquet(dst, index=False)
    return len(df)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="synthetic-aqa parquet")
    parser.add_argument("dst", help="output parquet with code-word choices and answers")
    parser.add_argument("--show", action="store_true", help="print the option -> code word table")
    args = parser.parse_args(argv)
    if args.show:
        for option, code in code_map().items():
            print(f"{option:>16} -> {code}")
    n = convert(args.src, args.dst)
    print(f"[code_words] {n} rows -> {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
