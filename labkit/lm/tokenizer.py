"""The character tokenizer of 12_distill_language_model, and the errors for ids of another vocabulary."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch


class VocabularyMismatchError(ValueError):
    """Token ids or a model that belong to another vocabulary than the one in use (12_distill_language_model)."""


@dataclass(frozen=True)
class CharTokenizer:
    """A fixed character vocabulary: id 0 is the unknown character, id i + 1 is ``chars[i]`` (12_distill_language_model)."""

    chars: tuple[str, ...]

    UNKNOWN = 0
    UNKNOWN_TEXT = "\N{REPLACEMENT CHARACTER}"  # what decode shows for the unknown id

    @classmethod
    def from_text(cls, text: str, min_count: int = 5) -> CharTokenizer:
        """The characters seen at least ``min_count`` times in ``text``, sorted; rarer ones share the unknown id.

        Built from the training text only: a character met first in held-out text is unknown, as it would be for
        any text the model meets later. Merging the rare ones keeps the vocabulary at about 100 on the corpus.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counts = Counter(text)
        return cls(tuple(sorted(c for c, n in counts.items() if n >= min_count)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> torch.Tensor:
        """``text`` as a 1-D int64 tensor of ids; characters outside the vocabulary become :attr:`UNKNOWN`."""
        index = {c: i + 1 for i, c in enumerate(self.chars)}
        return torch.tensor([index.get(c, self.UNKNOWN) for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str | list[str]:
        """The text of 1-D ``ids``, or one text per row of a 2-D tensor (a batch of samples)."""
        ids = torch.as_tensor(ids)
        if ids.dim() == 2:
            return [self.decode(row) for row in ids]
        if ids.dim() != 1:
            raise ValueError(f"decode takes 1-D ids (one text) or 2-D ids (one text per row), got shape "
                             f"{tuple(ids.shape)}")
        _check_ids(ids, self.vocab_size, "ids")
        table = (self.UNKNOWN_TEXT,) + self.chars
        return "".join(table[i] for i in ids.tolist())

    def to_json(self) -> str:
        return json.dumps(list(self.chars), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CharTokenizer:
        return cls(tuple(json.loads(text)))


def _check_ids(ids: torch.Tensor, vocab_size: int, name: str) -> None:
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of token ids, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise VocabularyMismatchError(f"{name} hold ids from {int(ids.min())} to {int(ids.max())}, but the vocabulary "
                                      f"has {vocab_size} tokens (0 to {vocab_size - 1}): encode the text with the "
                                      "tokenizer the model was built or saved with")


def check_same_vocabulary(expected: CharTokenizer, found: CharTokenizer, what: str = "the model") -> None:
    """Raise :class:`VocabularyMismatchError` unless ``found`` is ``expected``: ids mean other characters otherwise."""
    if expected != found and set(expected.chars) == set(found.chars):
        raise VocabularyMismatchError(f"{what} uses the same {found.vocab_size} tokens in another order, so every id "
                                      "means another character: use the tokenizer load_lm returned with the teacher "
                                      "for every model and text")
    if expected != found:
        only_expected, only_found = set(expected.chars) - set(found.chars), set(found.chars) - set(expected.chars)
        raise VocabularyMismatchError(f"{what} uses another vocabulary ({found.vocab_size} tokens, not "
                                      f"{expected.vocab_size}; only in one: {sorted(only_expected | only_found)!r}): "
                                      "use the tokenizer load_lm returned with the teacher for every model and text")
