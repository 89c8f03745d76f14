"""Shipped, hash-verified weights: the CIFAR-10 teacher and reference students (introduced in 04_cifar_teacher).

Weights are stored as safetensors (no pickle, so loading cannot run code) and each file's sha256 is pinned
here; a missing, truncated or altered file is refused with a clear error before anything is read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from labkit import models
from labkit.atomic import atomic_path
from labkit.settings import device as default_device

WEIGHTS_DIR = Path(__file__).parent / "weights"
# name -> (architecture, file, sha256); how each was trained is in weights/README.md (the model card).
SHIPPED: dict[str, tuple[str, str, str]] = {
    "teacher": ("teacher", "teacher.safetensors", "97b210e218349697b69ace89d273eacabb64249ea9df91b321c7e5be543404e8"),
    "teacher_2": ("teacher", "teacher_2.safetensors", "dd6e3c3c15e658e6cf6d24ed7d28144e86e809a573287d92b3203ddff2ea5ade"),
    "teacher_3": ("teacher_wide_last", "teacher_3.safetensors",
                  "f4c6a674e3afe5b2fc86b8000475f0bdf8b5c8e523e689aed666049afe8d383b"),
    "student_small_scratch": ("student_small", "student_small_scratch.safetensors",
                              "bfb57b6baf71ded10ad68f7eaec4a8899dec70eaff01f592a7367c17736c1e3a"),
    "student_small_distilled": ("student_small", "student_small_distilled.safetensors",
                                "7b0bc3d0eaae118d73fd5505299995332412dab083655fa80983a80b2fbf5092"),
}


class WeightsError(RuntimeError):
    """A weights file is missing, damaged or not the one whose hash labkit pins."""


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(model: nn.Module, path: str | Path, half: bool = True) -> str:
    """Write ``model``'s state as safetensors and return its sha256 (introduced in 04_cifar_teacher).

    With ``half`` the parameters are stored as float16, halving the file; buffers such as BatchNorm running
    variances stay float32, where float16 would round small variances badly.
    """
    params = {name for name, _ in model.named_parameters()}
    state = {k: (v.half() if half and k in params and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return sha256_of(path)


def load_weights(model: nn.Module, path: str | Path, sha256: str | None = None) -> nn.Module:
    """Load safetensors weights into ``model`` (after checking ``sha256`` when given); returns the model.

    Introduced in 04_cifar_teacher. A damaged file, or one whose tensors do not fit ``model`` (missing,
    unexpected or differently shaped), is a :class:`WeightsError` that names the file and the tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} is missing; reinstall labkit or retrain with the labkit CLI")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise WeightsError(f"weights file {path} is damaged or altered: sha256 {actual}, expected {sha256}. "
                               "Reinstall labkit (e.g. `git checkout -- labkit/weights`) to restore it.")
    try:
        state = load_file(str(path))
    except SafetensorError as err:
        raise WeightsError(f"weights file {path} is not a complete safetensors file ({err}): it is empty, truncated "
                           "or damaged; save it again with save_weights, or reinstall labkit") from None
    reference = model.state_dict()
    named = {"missing": reference.keys() - state.keys(), "unexpected": state.keys() - reference.keys()}
    problems = [f"{what}: {_listed(sorted(keys))}" for what, keys in named.items() if keys]
    shapes = [f"{k} is {tuple(v.shape)} in the file, {tuple(reference[k].shape)} in the model"
              for k, v in sorted(state.items()) if k in reference and v.shape != reference[k].shape]
    problems += [_listed(shapes, "; ")] if shapes else []
    if problems:
        raise WeightsError(f"weights file {path} does not fit {type(model).__name__} ({'; '.join(problems)}): "
                           "load it into the architecture it was saved from")
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model


def _listed(items: list[str], sep: str = ", ", at_most: int = 5) -> str:
    # A whole wrong architecture mismatches hundreds of tensors: name a few, count the rest.
    rest = f" and {len(items) - at_most} more" if len(items) > at_most else ""
    return sep.join(items[:at_most]) + rest


def load_pretrained(name: str, device: str | torch.device | None = None) -> nn.Module:
    """A shipped model by name (see :data:`SHIPPED`), verified, in eval mode on ``device`` (default:
    :func:`labkit.device`, so a GPU when there is one)."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped weights named {name!r}; available: {sorted(SHIPPED)}")
    arch, filename, sha = SHIPPED[name]
    model = load_weights(models.create(arch), WEIGHTS_DIR / filename, sha)
    return model.to(default_device() if device is None else device).eval()


def load_teacher(device: str | torch.device | None = None) -> nn.Module:
    """The shipped CIFAR-10 teacher, verified and in eval mode (introduced in 01_dark_knowledge)."""
    return load_pretrained("teacher", device)
