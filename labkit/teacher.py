"""A frozen teacher and a disk cache of its logits (introduced in 05_distill_student)."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import types

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit.data import ImageSubset, _read_tensor_cache, _write_tensor_cache, images_crc32
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


_PLAIN = (bool, int, float, str, type(None))


def code_digest(code: types.CodeType, h: "hashlib._Hash") -> None:
    """Feed ``h`` with what ``code`` computes (its bytecode, names and constants, nested code included), not where
    it was written: a notebook cell's file name changes every session."""
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            code_digest(const, h)
        else:
            h.update(repr(const).encode())


def _settings(module: nn.Module) -> dict:
    """A module's own plain settings: the numbers, strings and flags (and tuples of them) it holds."""
    def plain(v: object) -> bool:
        return isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(x, _PLAIN) for x in v))
    return {k: v for k, v in sorted(vars(module).items()) if not k.startswith("_") and k != "training" and plain(v)}


def _beyond_weights(module: nn.Module) -> list | None:
    """What else than its weights decides ``module``'s own computation, or None when nothing does: for a class
    defined outside labkit and PyTorch (a learner's wrapper), its code and settings; for a labkit class, the
    settings it names in ``OUTPUT_SETTINGS`` that differ from its constructor's defaults."""
    cls = type(module)
    if not cls.__module__.startswith(("labkit", "torch")):
        h = hashlib.sha256()
        for name, attr in sorted(vars(cls).items()):
            if isinstance(attr, types.FunctionType):
                h.update(name.encode())
                code_digest(attr.__code__, h)
        return [cls.__qualname__, h.hexdigest()[:16], _settings(module)]
    named = getattr(cls, "OUTPUT_SETTINGS", ())
    if not named:
        return None
    defaults = inspect.signature(cls.__init__).parameters
    changed = {k: getattr(module, k) for k in named if k in defaults and getattr(module, k) != defaults[k].default}
    return [cls.__qualname__, changed] if changed else None


def teacher_identity(model: nn.Module) -> str:
    """What a teacher computes, as the key of its cached logits, of the runs stored with it and of resume checks
    (introduced in 05_distill_student): its :func:`fingerprint` (the weights), followed by a digest of whatever
    else decides its outputs, when anything does (:func:`_beyond_weights` of every module: a learner's wrapper that
    divides by a temperature, a changed ``logit_scale``). A labkit model as labkit builds it keeps its plain
    fingerprint, so the runs kept before this identity existed keep their names. Not covered: attributes of
    PyTorch's own layers changed after they were built."""
    extra = [(name, found) for name, m in model.named_modules() if (found := _beyond_weights(m)) is not None]
    if not extra:
        return fingerprint(model)
    return fingerprint(model) + "+" + hashlib.sha256(repr(extra).encode()).hexdigest()[:16]


def short_identity(model: nn.Module) -> str:
    """:func:`teacher_identity` with the weights' part cut to 16 hex digits, as run records and names carry it."""
    weights, plus, extra = teacher_identity(model).partition("+")
    return weights[:16] + plus + extra


def teacher_logits_for_views(teacher: nn.Module, views: list[torch.Tensor | AugmentedView | ImageSubset],
                             batch_size: int = EVAL_BATCH,
                             use_cache: bool = True, progress: bool = True) -> torch.Tensor:
    """The teacher's logits for each image of each view (uint8 images or :class:`AugmentedView`), as K x N x C.

    Cached on disk under labkit's cache folder, keyed by what the teacher computes (:func:`teacher_identity`), the
    views' contents and the
    precision the teacher computes in (:func:`labkit.settings.precision`), so every later student run (other
    seeds, T, alpha) reuses them. The file is checksummed like the data cache: a damaged one is reported and
    rebuilt, never used.
    """
    # a GPU under `accelerate launch` (docs/scaling.md); a teacher without weights (labkit.controls) has a buffer
    device = next(itertools.chain(teacher.parameters(), teacher.buffers())).device
    computed_in = precision(device, teacher)
    h = hashlib.sha256(teacher_identity(teacher).encode())
    if computed_in != LEGACY_PRECISION:  # float32 logits keep the names they had before labkit had a precision
        h.update(computed_in.encode())
    for v in views:
        h.update(f"{tuple(v.shape)}:{images_crc32(v)}".encode())
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
