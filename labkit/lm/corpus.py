"""The offline corpus of 12_distill_language_model: Python's documentation topics, split by topic."""

from __future__ import annotations

import hashlib
import platform
from typing import NamedTuple


class CorpusMismatchError(ValueError):
    """This Python's documentation differs from the text a model was trained on (12_distill_language_model)."""


class Corpus(NamedTuple):
    """The train and held-out text, the sha256 of the whole corpus and the names of the held-out topics."""

    train: str
    held_out: str
    sha256: str
    held_out_topics: tuple[str, ...]


def load_corpus(expected_sha256: str | None = None) -> Corpus:
    """Python's documentation topics as a train / held-out corpus (introduced in 12_distill_language_model).

    The text is ``pydoc_data.topics.topics``, the ~79 documentation topics (about 465,000 characters of English
    prose and grammar) that ``help()`` shows, shipped with every CPython: no download. It is part of the Python
    documentation, copyright the Python Software Foundation, distributed under the PSF License Agreement.

    Topics are sorted by name and joined with a blank line; a topic is held out when the sha256 of its name is 0
    mod 10 (about a tenth of the text). Hashing the name, rather than taking every tenth topic, keeps the split of
    the other topics unchanged when a Python version adds one. Other Python versions ship other text, so
    ``sha256`` identifies it: pass the value a model was trained with as ``expected_sha256`` to get a
    :class:`CorpusMismatchError` instead of numbers that silently differ from the notebook's.
    """
    from pydoc_data.topics import topics  # half a megabyte of text: read when asked for, not on import

    names = sorted(topics)
    held = tuple(name for name in names if int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10 == 0)
    sha = hashlib.sha256("\n".join(topics[name] for name in names).encode()).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        raise CorpusMismatchError(f"this Python's ({platform.python_version()}) documentation topics have sha256 "
                                  f"{sha}, not the expected {expected_sha256}: the text differs from the one the model "
                                  "was trained on. Use the Python version named in the model card, "
                                  "or pass expected_sha256=None and retrain the teacher on this text")
    join = lambda chosen: "\n".join(topics[name] for name in names if (name in held) == chosen)
    return Corpus(join(False), join(True), sha, held)
