"""How a language model is measured in 12_distill_language_model: bits per character, diversity, entropy of its
samples, agreement with the teacher."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from labkit.distillation import entropy
from labkit.lm.batches import TokenBatch
from labkit.lm.losses import forward_kl, next_token_cross_entropy, reverse_kl
from labkit.lm.model import CharTransformer, _device, _evaluating
from labkit.lm.tokenizer import _check_ids
from labkit.validate import check_same_shape


def bits_per_character(model: CharTransformer, ids: torch.Tensor, context: int | None = None,
                       batch_size: int = 64) -> float:
    """Mean cross-entropy in bits of every character of 1-D ``ids`` but the first (introduced in 12_distill_language_model).

    The text is cut into non-overlapping windows of ``context`` predictions (default: the model's context), so
    every character is predicted once, from the characters before it in its window; the first ones of each window
    see little context, which makes this a little pessimistic, and fast. Lower is better; a model that knows
    nothing scores log2(vocab_size).
    """
    context = model.config.context if context is None else context
    if not 1 <= context <= model.config.context:
        raise ValueError(f"context must lie in [1, {model.config.context}] (the model's), got {context}")
    if ids.dim() != 1 or len(ids) < 2:
        raise ValueError(f"ids must be a 1-D tensor of at least 2 token ids, got shape {tuple(ids.shape)}")
    _check_ids(ids, model.config.vocab_size, "ids")
    ids = ids.to(_device(model))
    inputs, targets = ids[:-1], ids[1:]
    full = len(inputs) // context * context
    windows = [(inputs[:full].view(-1, context), targets[:full].view(-1, context))]
    if full < len(inputs):
        windows.append((inputs[full:][None], targets[full:][None]))
    nats = 0.0
    with _evaluating(model):
        for x, y in windows:
            for start in range(0, len(x), batch_size):
                logits = model(x[start:start + batch_size]).float()
                nats += F.cross_entropy(logits.flatten(0, 1), y[start:start + batch_size].flatten(), reduction="sum").item()
    return nats / len(targets) / math.log(2)


def distinct_ngrams(texts: str | Sequence[str], n: int = 2, unit: str = "word") -> float:
    """Distinct-n: the number of different n-grams over the number of n-grams, pooled over ``texts``.

    Introduced in 12_distill_language_model as a diversity measure of samples (Li et al. 2016): 1 when no n-gram
    repeats, near 0 for text stuck in a loop. ``unit`` is ``"word"`` (whitespace-separated) or ``"char"``;
    n-grams never span two texts. 0 when no text is long enough for one n-gram.
    """
    if n < 1 or unit not in ("word", "char"):
        raise ValueError(f"need n >= 1 and unit 'word' or 'char', got n={n}, unit={unit!r}")
    grams = []
    for text in [texts] if isinstance(texts, str) else texts:
        units = text.split() if unit == "word" else text
        grams += [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def sample_entropy(model: CharTransformer, samples: TokenBatch) -> float:
    """Mean entropy in bits of ``model``'s next-token distribution at the sampled positions of ``samples``.

    Introduced in 12_distill_language_model: pass the model's own samples (:func:`batch_from_model_samples`) to
    see how sure it is of the text it writes. Mode-seeking students score lower than mean-seeking ones.
    """
    with _evaluating(model):
        logits = model(samples.inputs.to(_device(model)))[:, samples.first_target:].float()
    return entropy(torch.softmax(logits, dim=-1)).mean().item()


def window_logits(model: CharTransformer, windows: TokenBatch, batch_size: int = 64) -> torch.Tensor:
    """``model``'s float32 logits at every input position of ``windows``: (rows, context, vocab), on the CPU.

    Introduced in 12_distill_language_model: the teacher's are computed once and compared with every student's.
    """
    with _evaluating(model):
        return torch.cat([model(windows.inputs[s:s + batch_size].to(_device(model))).float().cpu()
                          for s in range(0, len(windows.tokens), batch_size)])


def compare_to_teacher(model: CharTransformer, windows: TokenBatch, teacher_logits: torch.Tensor) -> dict[str, float]:
    """Bits per character of ``model`` on ``windows``, and its forward and reverse KL to the teacher there, in bits.

    Introduced in 12_distill_language_model. ``teacher_logits`` are :func:`window_logits` of the teacher on the
    same windows. ``bits_per_character`` is the cross-entropy with the text's next characters (no teacher);
    ``forward_kl`` is KL(teacher || model) and ``reverse_kl`` KL(model || teacher), each per position, averaged
    over every position of the windows.
    """
    logits = window_logits(model, windows)
    check_same_shape(logits, teacher_logits, ("model logits", "teacher_logits"))
    ln2 = math.log(2)
    return {"bits_per_character": next_token_cross_entropy(logits, windows.targets).item() / ln2,
            "forward_kl": forward_kl(logits, teacher_logits).item() / ln2,
            "reverse_kl": reverse_kl(logits, teacher_logits).item() / ln2}


def on_policy_metrics(model: CharTransformer, teacher: CharTransformer, samples: TokenBatch) -> dict[str, float]:
    """How ``model``'s own text looks to the teacher, in bits per sampled position (introduced in
    12_distill_language_model).

    ``samples`` are the model's own (:func:`batch_from_model_samples` of ``model``): the contexts on-policy
    distillation trains on, not corpus text. ``teacher_bits_per_character``: the teacher's cross-entropy of the
    sampled characters (how plausible the teacher finds the text; lower is better); ``model_bits_per_character``:
    the model's own; ``reverse_kl`` KL(model || teacher) and ``forward_kl`` KL(teacher || model) at those contexts.
    """
    k, ln2 = samples.first_target, math.log(2)
    with _evaluating(model), _evaluating(teacher):
        logits = model(samples.inputs.to(_device(model)))[:, k:].float().cpu()
        teacher_logits = teacher(samples.inputs.to(_device(teacher)))[:, k:].float().cpu()
    targets = samples.targets[:, k:].cpu()
    return {"teacher_bits_per_character": next_token_cross_entropy(teacher_logits, targets).item() / ln2,
            "model_bits_per_character": next_token_cross_entropy(logits, targets).item() / ln2,
            "reverse_kl": reverse_kl(logits, teacher_logits).item() / ln2,
            "forward_kl": forward_kl(logits, teacher_logits).item() / ln2}
