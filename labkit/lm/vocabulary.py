"""A student with another vocabulary than its teacher's (introduced in 12_distill_language_model).

A per-token KL compares two distributions over the same tokens: a student whose vocabulary differs (here a
case-folded one, a subset of the teacher's characters) cannot take it directly, and :func:`labkit.lm.forward_kl`
says so (:class:`~labkit.lm.VocabularyMismatchError`). Two ways out: distill at the sequence level (the student
trains on text the teacher wrote, re-encoded with its own tokenizer: :func:`labkit.lm.model_text`), or, when every
teacher token stands for one student token and the positions line up (a character-level pair, as here), add up the
teacher's probabilities per student token (:func:`project_to_vocabulary`). Tokenizers whose pieces do not line up need
an alignment of the sequences as well, as ULD and GOLD do (Boizard et al. 2024; TRL's GOLDTrainer).
"""

from __future__ import annotations

from typing import Callable

import torch

from labkit.lm.tokenizer import CharTokenizer, _check_ids
from labkit.validate import check_logits

_TINY = torch.finfo(torch.float32).tiny  # the log-probability floor of a student token no teacher token maps to


def vocabulary_map(teacher: CharTokenizer, student: CharTokenizer,
                   fold: Callable[[str], str] = lambda c: c) -> torch.Tensor:
    """For each teacher id, the student id of ``fold(character)`` (e.g. ``str.lower`` for a case-folded student):
    a 1-D int64 tensor of the teacher's vocabulary size. The unknown id, and a character whose folded form the
    student lacks, map to the student's unknown id."""
    index = {c: i + 1 for i, c in enumerate(student.chars)}
    ids = [CharTokenizer.UNKNOWN] + [index.get(fold(c), CharTokenizer.UNKNOWN) for c in teacher.chars]
    return torch.tensor(ids, dtype=torch.long)


def project_to_vocabulary(teacher_logits: torch.Tensor, mapping: torch.Tensor, student_vocab_size: int) -> torch.Tensor:
    """The teacher's next-token distributions on the student's tokens, as log-probabilities of the same (batch, time)
    shape: each student token gets the summed probability of the teacher tokens ``mapping`` sends to it
    (:func:`vocabulary_map`); one that none is sent to gets the probability 1.2e-38 (float32's smallest normal
    number), negligible, and finite log-probabilities for the losses. Pass the result where teacher logits go (a log-softmax leaves it as it
    is); detached, computed in float32."""
    if not isinstance(mapping, torch.Tensor):
        raise ValueError(f"mapping must be a tensor, got {type(mapping).__name__}: build it with "
                         "vocabulary_map(teacher_tokenizer, student_tokenizer)")
    if mapping.dim() != 1 or teacher_logits.shape[-1] != len(mapping):
        raise ValueError(f"mapping must give one student id per teacher token ({teacher_logits.shape[-1]}), got shape "
                         f"{tuple(mapping.shape)}: build it with vocabulary_map(teacher_tokenizer, student_tokenizer)")
    _check_ids(mapping, student_vocab_size, "mapping")
    check_logits(teacher_logits.reshape(-1, len(mapping)), "teacher_logits")
    probs = torch.softmax(teacher_logits.detach().float(), dim=-1)
    projected = probs.new_zeros(*probs.shape[:-1], student_vocab_size).index_add_(-1, mapping.to(probs.device), probs)
    return projected.clamp_min(_TINY).log()
