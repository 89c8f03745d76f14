"""A nanoGPT-style causal transformer over characters (12_distill_language_model)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LMConfig:
    """Shape of a :class:`CharTransformer`; ``context`` is the longest sequence it reads (12_distill_language_model)."""

    vocab_size: int
    context: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 192
    dropout: float = 0.0
    tie_weights: bool = True  # the output head reuses the token embedding (fewer parameters, as in GPT-2)

    def __post_init__(self):
        if min(self.vocab_size - 1, self.context, self.n_layer, self.n_head) < 1 or self.d_model % self.n_head:
            raise ValueError(f"need vocab_size >= 2, context, n_layer and n_head >= 1, and d_model divisible by "
                             f"n_head: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)
                   for t in self.qkv(x).split(width, dim=2))
        if cache:  # keys and values of the earlier positions: only the new token is computed
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        if cache is not None:
            cache[:] = [k, v]
        # One new token may see every cached one; is_causal would align its mask to the first key instead.
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=k.shape[2] == length)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: LMConfig):
        super().__init__()
        d = config.d_model
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), CausalSelfAttention(config), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), cache))
        return x + self.drop(self.mlp(self.ln2(x)))


class CharTransformer(nn.Module):
    """A small GPT: token + position embeddings, pre-LN blocks, final LayerNorm, logits over the vocabulary.

    Introduced in 12_distill_language_model. ``model(ids)`` maps (batch, time) ids, time <= ``config.context``, to
    (batch, time, vocab) logits, the logits at position t predicting token t + 1. Initialised like GPT-2 (normal
    0.02, residual projections scaled by 1/sqrt(2 n_layer)) from the global torch seed.
    """

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        # A tied head is the embedding matrix itself, not a second module sharing it: safetensors refuses shared tensors.
        self.head = None if config.tie_weights else nn.Linear(config.d_model, config.vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids: torch.Tensor, cache: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
        """Logits of (batch, time) ``ids``; with ``cache`` (a list, empty at first) it remembers the keys and values
        of every position it has seen, so that sampling feeds one new token at a time."""
        if cache is not None and not cache:
            cache.extend([] for _ in self.blocks)
        past = cache[0][0].shape[2] if cache and cache[0] else 0
        if ids.dim() != 2 or past + ids.shape[1] > self.config.context or (past and ids.shape[1] != 1):
            raise ValueError(f"ids must be (batch, time) with time <= context {self.config.context} (one at a time "
                             f"after a cached prompt), got shape {tuple(ids.shape)} after {past} cached positions: "
                             f"feed the last {self.config.context} tokens at most")
        positions = torch.arange(past, past + ids.shape[1], device=ids.device)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[i])
        return F.linear(self.ln_f(x), self.tok_emb.weight if self.head is None else self.head.weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    # Sampling and evaluation run without dropout and gradients, then give the model back in the mode it had.
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
