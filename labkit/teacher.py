"""A frozen teacher and a disk cache of its logits (introduced in 05_distill_student)."""

from __future__ import annotations

import hashlib
import itertools
import zlib

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit.data import ImageSubset, _read_tensor_cache, _write_tensor_cache
from labkit.evaluate import EVAL_BATCH, eval_mode
from labkit.loader import AugmentedView, to_float
from labkit.settings import LEGACY_PRECISION, autocast, cache_dir, precision


class FrozenTeacher(nn.Module):
    """Wraps a teacher so it can only predict: every forward pass in eval mode and without gradients, BatchNorm
    statistics fixed.

    The wrapped model is the caller's and is left as the caller had it: its parameters keep their
    ``requires_grad``, and its mode is switched to eval only for the forward pass, then given back (a later
    ``train(teacher, ...)`` must still train it). ``.train()`` on the wrapper is ignored.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = False

    @property
    def fixed_precision(self) -> str | None:
        """The wrapped model's own number format, if it has one (:func:`labkit.settings.precision`)."""
        return getattr(self.model, "fixed_precision", None)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return self  # not passed on to the caller's model (nn.Module.train would be)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(x)
        finally:
            self.model.train(was_training)


def fingerprint(model: nn.Module) -> str:
    """sha256 of a model's state (names, shapes and values): equal weights give equal fingerprints."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _crc32(view: torch.Tensor | AugmentedView | ImageSubset, size: int = 2_000) -> int:
    crc = 0
    for s in range(0, len(view), size):  # a slice at a time: views and subsets make their images on demand
        crc = zlib.crc32(view[s:s + size].contiguous().numpy().data, crc)
    return crc


def teacher_logits_for_views(teacher: nn.Module, views: list[torch.Tensor | AugmentedView | ImageSubset],
                             batch_size: int = EVAL_BATCH,
                             use_cache: bool = True, progress: bool = True) -> torch.Tensor:
    """The teacher's logits for each image of each view (uint8 images or :class:`AugmentedView`), as K x N x C.

    Cached on disk under labkit's cache folder, keyed by the teacher's weights, the views' contents and the
    precision the teacher computes in (:func:`labkit.settings.precision`), so every later student run (other
    seeds, T, alpha) reuses them. The file is checksummed like the data cache: a damaged one is reported and
    rebuilt, never used.
    """
    # a GPU under `accelerate launch` (docs/scaling.md); a teacher without weights (labkit.controls) has a buffer
    device = next(itertools.chain(teacher.parameters(), teacher.buffers())).device
    computed_in = precision(device, teacher)
    h = hashlib.sha256(fingerprint(teacher).encode())
    if computed_in != LEGACY_PRECISION:  # float32 logits keep the names they had before labkit had a precision
        h.update(computed_in.encode())
    for v in views:
        h.update(f"{tuple(v.shape)}:{_crc32(v)}".encode())
    key = h.hexdigest()
    path = cache_dir() / "teacher_logits" / f"{key[:24]}.pt"
    cached = _read_tensor_cache(path, key) if use_cache else None
    if cached is not None:
        return cached["logits"]
    chunks = [(k, s) for k in range(len(views)) for s in range(0, len(views[k]), batch_size)]
    out = [[] for _ in views]
    with eval_mode(teacher), torch.no_grad(), autocast(device, teacher):
        for k, s in tqdm(chunks, desc="teacher logits", disable=not progress, leave=False):
            x = to_float(views[k][s:s + batch_size].to(device), channels_last=True)
            out[k].append(teacher(x).float().cpu())
    logits = torch.stack([torch.cat(o) for o in out])
    if use_cache:
        _write_tensor_cache(path, {"logits": logits}, key)
    return logits
