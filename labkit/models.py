"""The course's CIFAR-10 networks: an airbench94-style teacher and small students (introduced in 04_cifar_teacher).

Every model takes images as the data layer gives them, uint8 in 0..255, or float in [0, 1] (a fixed ``Normalize``
is its first layer, see :func:`as_model_input`), and returns logits.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from labkit.data import CIFAR10_MEAN, CIFAR10_STD
from labkit.evaluate import eval_mode
from labkit.loader import to_float


class InputRangeWarning(UserWarning):
    """Float images far outside [0, 1] reached a model: most likely 0..255 values or images normalised twice."""


def as_model_input(images: torch.Tensor, check_range: bool = True) -> torch.Tensor:
    """``images`` as every labkit model reads them (introduced in 00_start_here, where a plain loop feeds batches
    straight from ``load_cifar10()`` to the models): uint8 (0..255) becomes float in [0, 1], as the data loader does;
    float images are taken as they are, with an :class:`InputRangeWarning` when ``check_range`` and they lie far
    outside [0, 1], where every model predicts near chance. The range check costs a reduction and a device sync, so
    models make it in eval mode only (every accuracy goes through it) and never in the training step or in the
    compiled models that the speed benchmarks time (the ONNX Runtime model, on the CPU, makes it); nor while a graph
    is traced or compiled."""
    if images.dtype == torch.uint8:
        return to_float(images)
    if check_range and images.numel() and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
        low, high = torch.aminmax(images.detach())
        if low < -1 or high > 2:
            warnings.warn(f"images range from {low.item():.3g} to {high.item():.3g}, but labkit's models expect "
                          "float images in [0, 1] (or uint8 in 0..255): divide 0..255 floats by 255, and do not "
                          "normalise them yourself (the model's first layer does)", InputRangeWarning, stacklevel=3)
    return images


class Normalize(nn.Module):
    """Subtract the CIFAR-10 channel means and divide by the standard deviations (fixed buffers), after
    :func:`as_model_input` (uint8 images become floats in [0, 1]; the range is checked in eval mode)."""

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (as_model_input(x, check_range=not self.training) - self.mean) / self.std


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with airbench's settings: tiny eps, fast running statistics, optionally a frozen scale."""

    def __init__(self, channels: int, momentum: float = 0.4, train_weight: bool = False):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(train_weight)


class Conv(nn.Conv2d):
    """3x3 'same' convolution without bias, initialised near identity (Dirac) so that depth starts harmless."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, padding: str | int = "same", bias: bool = False):
        super().__init__(c_in, c_out, kernel_size=kernel_size, padding=padding, bias=bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        nn.init.dirac_(self.weight.data[: self.weight.size(1)])


def recompute_in_backward(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)``, but while training keep only ``x`` for the backward pass and run ``fn`` again there.

    Activation checkpointing (``torch.utils.checkpoint``) for cheap pieces without BatchNorm, whose running
    statistics a second forward pass would update twice. Used for the stem and the max-pools of the networks of
    04_cifar_teacher: at batch 1024 it keeps ~145 MiB less per student_small step, gives the same numbers and
    measured no slower (docs/instructors.md, "Memory"). Forward hooks inside ``fn`` fire again during backward.
    """
    if module.training and torch.is_grad_enabled():
        return checkpoint(fn, x, use_reentrant=False)
    return fn(x)


class ConvGroup(nn.Module):
    """conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU: one stage, halving the resolution."""

    def __init__(self, c_in: int, c_out: int, train_bn_weight: bool = False, c_mid: int | None = None):
        super().__init__()
        c_mid = c_mid or c_out  # narrower only in a channel-pruned copy (labkit.compress.prune_channels)
        self.conv1, self.pool = Conv(c_in, c_mid), nn.MaxPool2d(2)
        self.norm1 = BatchNorm(c_mid, train_weight=train_bn_weight)
        self.conv2 = Conv(c_mid, c_out)
        self.norm2 = BatchNorm(c_out, train_weight=train_bn_weight)
        self.activ = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(recompute_in_backward(self, self.pool, self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class CifarNet(nn.Module):
    """Stem, three ``ConvGroup`` stages, global max-pool and a scaled linear head.

    With ``whiten=True`` the stem is airbench's frozen 2x2 whitening convolution (set from data by
    :func:`init_whitening`); otherwise it is a trainable 3x3 convolution.
    """

    OUTPUT_SETTINGS = ("logit_scale",)  # beyond the weights: labkit.teacher.teacher_identity reads it

    def __init__(self, widths: tuple[int, int, int], stem_width: int, whiten: bool, num_classes: int = 10,
                 logit_scale: float = 1 / 9, train_bn_weight: bool = False,
                 mid_widths: tuple[int, int, int] | None = None):
        super().__init__()
        self.normalize = Normalize()
        if whiten:
            self.stem = nn.Conv2d(3, stem_width, kernel_size=2, padding=0, bias=True)
            self.stem.weight.requires_grad_(False)
            nn.init.zeros_(self.stem.bias)
        else:
            self.stem = Conv(3, stem_width, bias=True)
        self.stem_activ = nn.GELU()
        w = (stem_width, *widths)
        mids = mid_widths or widths
        self.layers = nn.Sequential(*(ConvGroup(w[i], w[i + 1], train_bn_weight, mids[i]) for i in range(3)))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale
        self.whiten = whiten
        self.config = dict(widths=tuple(widths), stem_width=stem_width, whiten=whiten, num_classes=num_classes,
                           logit_scale=logit_scale, train_bn_weight=train_bn_weight, mid_widths=tuple(mids))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features (batch x width)."""
        x = recompute_in_backward(self, self._stem, x)
        return self.pool(self.layers(x)).flatten(1)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem_activ(self.stem(self.normalize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.logit_scale


@torch.no_grad()
def init_whitening(model: CifarNet, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set a whitening stem from the covariance of 2x2 patches of ``images`` (uint8, or float in [0, 1]).

    The stem's filters become the eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue), and
    their negatives (GELU then keeps both signs), so the first layer decorrelates the pixels.
    """
    if not model.whiten:
        raise ValueError("init_whitening needs a model built with whiten=True")
    x = model.normalize(as_model_input(images).float())
    k = model.stem.kernel_size[0]
    patches = x.unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, 3 * k * k).double()
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    # After the transpose each patch is laid out (channel, row, col), exactly like a conv filter.
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0).reshape(-1, 3, k, k)
    model.stem.weight.copy_(torch.cat([filters, -filters]).float())


def is_whitened(model: CifarNet) -> bool:
    """Whether ``model``'s whitening stem was already set from data: :func:`init_whitening` writes its filters in
    +/- pairs, which a randomly initialised stem never has (introduced in 04_cifar_teacher). Training a trained
    teacher again keeps its stem instead of recomputing it from other images."""
    w = model.stem.weight.detach()
    half = len(w) // 2
    return bool(model.whiten and w.abs().sum() > 0 and torch.equal(w[half:], -w[:half]))


_REGISTRY: dict[str, Callable[..., CifarNet]] = {
    "teacher": lambda **kw: CifarNet((64, 256, 256), stem_width=24, whiten=True, **kw),
    # narrower early, wider late: another shape of the same family, for a more diverse ensemble (07)
    "teacher_wide_last": lambda **kw: CifarNet((48, 192, 384), stem_width=24, whiten=True, **kw),
    "student_small": lambda **kw: CifarNet((24, 48, 64), stem_width=16, whiten=False, **kw),
    "student_medium": lambda **kw: CifarNet((32, 80, 128), stem_width=16, whiten=False, **kw),
}


def available() -> list[str]:
    """Names accepted by :func:`create`."""
    return sorted(_REGISTRY)


def create(name: str, num_classes: int = 10) -> CifarNet:
    """A freshly initialised model by name: ``"teacher"``, ``"teacher_wide_last"``, ``"student_small"`` or
    ``"student_medium"`` (introduced in 04_cifar_teacher), with ``num_classes`` outputs (fewer for a task on some
    of CIFAR-10's classes, as in 09_compress_and_deploy)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {available()}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = _REGISTRY[name](num_classes=num_classes)
    model.name = name
    return model


def whitening_stem(model: nn.Module) -> nn.Module | None:
    """The frozen whitening stem of a ``CifarNet`` built with ``whiten=True`` (set from the data by
    :func:`init_whitening`, not learned), else None: compression leaves it alone (09_compress_and_deploy)."""
    return getattr(model, "stem", None) if getattr(model, "whiten", False) else None


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) — what the model costs to store."""
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, image_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Forward-pass FLOPs for one image, counted by ``torch.utils.flop_counter`` (a multiply-add is 2 FLOPs)."""
    device = next(model.parameters()).device
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *image_size, device=device))
    return counter.get_total_flops()
