"""Atomic writes: every file labkit writes appears whole or not at all (used throughout labkit).

A writer fills a temporary file in the target's folder and, only once it is complete, ``os.replace`` puts it in
place: a reader, a crash (``kill -9``) or a full disk in the middle leaves the previous file as it was, never half a
file. :func:`atomic_path` is the one mechanism; the other functions are its common uses.
"""

from __future__ import annotations

import contextlib
import os
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
