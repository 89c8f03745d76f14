"""Sampling text from a language model (12_distill_language_model)."""

from __future__ import annotations

import torch

from labkit.lm.model import CharTransformer, _device, _evaluating
from labkit.lm.tokenizer import _check_ids
from labkit.validate import check_temperature


def sample(model: CharTransformer, prompt: torch.Tensor, num_tokens: int, temperature: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``prompt`` followed by ``num_tokens`` sampled ids: (batch, prompt + num_tokens), or 1-D for a 1-D prompt.

    Introduced in 12_distill_language_model. Each token is drawn from ``softmax(logits / temperature)`` given the
    last ``context`` tokens; ``temperature=0`` takes the most likely token instead. The same seeded ``generator``
    gives the same samples; the draws happen on the generator's device, so a CPU generator also fixes them for a
    model on a GPU (up to the GPU's rounding of the logits). Keys and values are cached while the text fits the
    context, so each new token costs one position's forward pass; beyond it each costs a whole window's.
    """
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    greedy = temperature == 0
    if not greedy:
        temperature = check_temperature(temperature)
    single = prompt.dim() == 1
    ids = (prompt[None] if single else prompt).to(_device(model))
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(f"prompt must be 1-D or (batch, length) ids with length >= 1, got shape {tuple(prompt.shape)}")
    _check_ids(ids, model.config.vocab_size, "prompt")
    context, cache = model.config.context, []
    with _evaluating(model):
        for step in range(num_tokens):
            # Within the context the cache holds every earlier position, so only the newest token is read; past it
            # the window slides, the position embeddings shift with it, and the whole window is read afresh.
            if step == 0:
                logits = model(ids[:, -context:], cache)
            elif ids.shape[1] <= context:
                logits = model(ids[:, -1:], cache)
            else:
                logits = model(ids[:, -context:])
            logits = logits[:, -1].float()
            if greedy:
                next_ids = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                where = probs.device if generator is None else generator.device
                next_ids = torch.multinomial(probs.to(where), 1, generator=generator).to(ids.device)
            ids = torch.cat([ids, next_ids], dim=1)
    return ids[0] if single else ids
