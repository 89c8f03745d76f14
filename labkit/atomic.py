"""Atomic writes: every file labkit writes appears whole or not at all (used throughout labkit).

A writer fills a temporary file in the target's folder and, only once it is complete, ``os.replace`` puts it in
place: a reader, a crash (``kill -9``) or a full disk in the middle leaves the previous file as it was, never half a
file. :func:`atomic_path` is the one mechanism; the other functions are its common uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer to fill; on success it replaces ``path``, on any error it is
    removed and ``path`` keeps its old content (or stays absent). The folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # what open() would have given it, not mkstemp's private 0600
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch  # here, so that writing text never loads PyTorch (benchmarks/notebook_runs.py measures memory)

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


CHECKED_KEY = "labkit_sha256"  # a checkpoint written by save_checked: the sha256 of its payload's bytes


class DamagedFileError(ValueError):
    """A file whose checksum does not match its content; the message names it and says what to do."""


def save_checked(obj: object, path: str | Path) -> None:
    """``torch.save(obj)``, atomically, with the sha256 of the saved bytes inside: :func:`load_checked` refuses a
    file damaged since (a flipped bit in a tensor would otherwise load, and train on, silently)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    atomic_torch_save({CHECKED_KEY: hashlib.sha256(payload).hexdigest(),
                       "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, path)


def load_checked(path: str | Path) -> object:
    """What :func:`save_checked` wrote, after checking its sha256 (loaded on the CPU, tensors only); a file
    written by plain ``torch.save`` (before checksums) is loaded as it is."""
    import io

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:  # truncated, empty, or not tensors
        raise DamagedFileError(f"{path} is damaged or is no checkpoint ({type(error).__name__}: "
                               f"{str(error).splitlines()[0] if str(error) else 'empty'}). Delete it (a checkpoint: "
                               "training starts again from the beginning)") from None
    if not (isinstance(state, dict) and CHECKED_KEY in state):
        return state
    payload = state["payload"].numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != state[CHECKED_KEY]:
        raise DamagedFileError(f"{path} is damaged: its content no longer matches the sha256 written with it. "
                               "Delete it (a checkpoint: training starts again from the beginning)")
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
