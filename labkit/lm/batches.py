"""Batches of token windows (12_distill_language_model): from the corpus, from a model's own samples, from fixed
rows."""

from __future__ import annotations

from typing import NamedTuple

import torch

from labkit.lm.model import CharTransformer
from labkit.lm.sampling import sample


class TokenBatch(NamedTuple):
    """(batch, length + 1) token ``tokens``; the loss counts targets from index ``first_target`` on (a prompt's are not)."""

    tokens: torch.Tensor
    first_target: int = 0

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.tokens[:, 1:]


def batch_from_corpus(ids: torch.Tensor, batch_size: int, context: int, generator: torch.Generator) -> TokenBatch:
    """``batch_size`` windows of ``context + 1`` tokens at random places of 1-D ``ids`` (12_distill_language_model).

    Off-policy text: the corpus itself, whoever is being trained on it.
    """
    if ids.dim() != 1 or len(ids) < context + 1:
        raise ValueError(f"ids must be 1-D and hold at least context + 1 = {context + 1} tokens, got shape "
                         f"{tuple(ids.shape)}")
    starts = torch.randint(0, len(ids) - context, (batch_size, 1), generator=generator, device=generator.device)
    return TokenBatch(ids[(starts + torch.arange(context + 1, device=starts.device)).to(ids.device)])


def batch_from_model_samples(model: CharTransformer, prompts_from: torch.Tensor, batch_size: int, context: int,
                             generator: torch.Generator, prompt_length: int = 8,
                             temperature: float = 1.0) -> TokenBatch:
    """Text written by ``model``: ``prompt_length`` corpus tokens, then its samples up to ``context + 1`` tokens.

    Introduced in 12_distill_language_model. With the student as ``model`` this is on-policy data (the student
    learns on its own mistakes); with the teacher, sequence-level KD. The prompts are random windows of
    ``prompts_from`` (the training ids) and are excluded from the loss (``first_target``).
    """
    if not 1 <= prompt_length <= context:
        raise ValueError(f"prompt_length must lie in [1, context={context}], got {prompt_length}")
    prompts = batch_from_corpus(prompts_from, batch_size, prompt_length - 1, generator).tokens
    tokens = sample(model, prompts, context + 1 - prompt_length, temperature, generator)
    return TokenBatch(tokens, first_target=prompt_length - 1)


def batch_from_rows(rows: TokenBatch, batch_size: int, generator: torch.Generator) -> TokenBatch:
    """``batch_size`` rows of a fixed data set (e.g. :func:`model_text`'s), drawn at random with replacement.

    Introduced in 12_distill_language_model; the rows keep their ``first_target``, so prompts stay out of the loss.
    """
    index = torch.randint(0, len(rows.tokens), (batch_size,), generator=generator, device=generator.device)
    return TokenBatch(rows.tokens[index.to(rows.tokens.device)], rows.first_target)


def text_windows(ids: torch.Tensor, context: int) -> TokenBatch:
    """1-D ``ids`` cut into consecutive windows of ``context`` predictions: row i is tokens ``i * context`` to
    ``(i + 1) * context`` inclusive, so every token but the first is a target once (a shorter last window is
    dropped). Introduced in 12_distill_language_model, to score several models on the very same positions."""
    if context < 1:
        raise ValueError(f"context must be at least 1 prediction per window, got {context}")
    if ids.dim() != 1 or len(ids) < context + 1:
        raise ValueError(f"ids must be 1-D with at least context + 1 = {context + 1} tokens, got shape "
                         f"{tuple(ids.shape)}")
    rows = (len(ids) - 1) // context
    return TokenBatch(ids[torch.arange(rows)[:, None] * context + torch.arange(context + 1)])
