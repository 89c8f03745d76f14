"""The offline corpus of 12_distill_language_model: Python's documentation topics, split by topic."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

from labkit.atomic import DamagedFileError

# Python 3.11.7's documentation topics, shipped so that every Python version reads the same text
TOPICS = Path(__file__).parent / "data" / "pydoc_topics_3.11.7.json.gz"
TOPICS_SHA256 = "2a95af4ac93f5b719944030ce3769070ddf827d847cba42192afa8da989e5dc4"


class CorpusMismatchError(ValueError):
    """The corpus differs from the text a model was trained on (12_distill_language_model)."""


class Corpus(NamedTuple):
    """The train and held-out text, the sha256 of the whole corpus and the names of the held-out topics."""

    train: str
    held_out: str
    sha256: str
    held_out_topics: tuple[str, ...]


def load_corpus(expected_sha256: str | None = None) -> Corpus:
    """Python's documentation topics as a train / held-out corpus (introduced in 12_distill_language_model).

    The text is ``pydoc_data.topics.topics`` of Python 3.11.7, the ~79 documentation topics (about 465,000
    characters of English prose and grammar) that ``help()`` shows. Every CPython ships its own version of them, and
    versions differ; labkit ships this one (``labkit/lm/data``, 135 KB compressed), so that the text, and every number
    measured on it, is the same on any Python. It is part of the Python documentation, copyright the Python Software
    Foundation, distributed under the PSF License Agreement.

    Topics are sorted by name and joined with a blank line; a topic is held out when the sha256 of its name is 0
    mod 10 (about a tenth of the text). ``sha256`` identifies the whole text: pass the value a model was trained
    with as ``expected_sha256`` to get a :class:`CorpusMismatchError` instead of numbers that silently differ.
    A damaged copy of the shipped file raises :class:`labkit.atomic.DamagedFileError`.
    """
    try:
        topics = json.loads(gzip.decompress(TOPICS.read_bytes()))
    except (OSError, EOFError, ValueError) as error:  # a truncated or overwritten gzip, or text that is not JSON
        raise DamagedFileError(f"{TOPICS} cannot be read ({type(error).__name__}: {error}): the file was changed or "
                               "damaged; reinstall labkit (or restore the file with git)") from None
    names = sorted(topics)
    sha = hashlib.sha256("\n".join(topics[name] for name in names).encode()).hexdigest()
    if sha != TOPICS_SHA256:
        raise DamagedFileError(f"{TOPICS} holds text with sha256 {sha}, not the {TOPICS_SHA256} labkit shipped: "
                               "the file was changed or damaged; reinstall labkit (or restore the file with git)")
    if expected_sha256 is not None and sha != expected_sha256:
        raise CorpusMismatchError(f"the corpus has sha256 {sha}, not the expected {expected_sha256}: the text differs "
                                  "from the one the model was trained on. Use the labkit version named in the model "
                                  "card, or pass expected_sha256=None and retrain the teacher on this text")
    held = tuple(name for name in names if int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10 == 0)
    join = lambda chosen: "\n".join(topics[name] for name in names if (name in held) == chosen)
    return Corpus(join(False), join(True), sha, held)
