"""What the language-model benchmarks share (lm_trl, lm_topk, lm_vocabulary): their command line and notebook 12's
teacher, corpus, budget and held-out windows."""

from __future__ import annotations

import argparse
import os
from typing import NamedTuple

import torch

from labkit import lm
from labkit.settings import PRECISION_ENV, QUICK_ENV, quick_mode


class LMSetup(NamedTuple):
    seeds: list[int]
    quick: bool
    budget: lm.DistillBudget
    teacher: lm.CharTransformer
    tokenizer: lm.CharTokenizer
    corpus: lm.Corpus
    train_ids: torch.Tensor
    held: torch.Tensor  # held-out ids, the budget's first held_out_chars
    eval_windows: lm.TokenBatch  # held cut into windows of the budget's context
    teacher_logits: torch.Tensor  # the teacher's on eval_windows


def lm_benchmark(description: str) -> LMSetup:
    """Parse ``--seeds`` and ``--quick`` (quick mode keeps two seeds), fix float32 (what is compared is the method,
    not the CPU's number format), and load notebook 12's teacher, corpus and budget."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help=f"a smoke test of seconds (also {QUICK_ENV}=1)")
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    os.environ[PRECISION_ENV] = "fp32"
    quick = quick_mode()
    budget = lm.distill_budget()
    loaded = lm.load_lm_teacher("cpu")
    corpus = lm.load_corpus(expected_sha256=loaded.corpus_sha256)
    train_ids = loaded.tokenizer.encode(corpus.train)
    held = loaded.tokenizer.encode(corpus.held_out)[:budget.held_out_chars]
    eval_windows = lm.text_windows(held, budget.context)
    return LMSetup(args.seeds[:2] if quick else args.seeds, quick, budget, loaded.model, loaded.tokenizer, corpus,
                   train_ids, held, eval_windows, lm.window_logits(loaded.model, eval_windows))


def corpus_windows(setup: LMSetup, seed: int) -> torch.Tensor:
    """The training windows of one seed, every step's batch in order (the same for every arm of that seed)."""
    g = torch.Generator().manual_seed(seed)
    b = setup.budget
    return torch.cat([lm.batch_from_corpus(setup.train_ids, b.batch_size, b.context, g).tokens for _ in range(b.steps)])
