"""Low-rank factorization: replace a layer's weight by the product of two thinner ones, from its truncated SVD
(introduced in 09_compress_and_deploy).

A linear layer ``y = W x`` with ``W = U S Vh`` becomes two: ``x -> (sqrt(S) Vh)[:r] x -> U[:, :r] sqrt(S)``. By the
Eckart-Young theorem the rank-``r`` truncation is the closest rank-``r`` matrix to ``W`` in the Frobenius norm, and
its error is exactly the norm of the dropped singular values.

A k x k convolution is factorized *spatially* (Jaderberg et al. 2014, scheme 2; Tai et al. 2016): its weight
``W[o, i, y, x]`` read as the matrix ``M[(i, y), (o, x)]`` has the truncated SVD ``M ~ sum_r u_r v_r^T``, which is a
vertical k x 1 convolution to ``r`` channels followed by a horizontal 1 x k one. At full rank the pair computes the
original convolution exactly (zero padding included); below it, it costs ``k r (c_in + c_out)`` multiply-adds per
pixel instead of ``k^2 c_in c_out``. BatchNorm layers and everything else are left as they are, so the factorized
network trains like the original (fine-tune it, with labels or a teacher, to recover what truncation lost).

* :func:`singular_values` of a layer, :func:`rank_for_energy` (the smallest rank that keeps a fraction of the
  squared singular values), :func:`full_rank`.
* :func:`factorize_linear`, :func:`factorize_conv`: one layer; :func:`factorize` a copy of a whole model, with a
  rank per layer or a kept energy; :func:`factorizable_layers` lists the layers it can factorize.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn

from labkit.models import whitening_stem


class LowRankError(ValueError):
    """A rank or a layer that low-rank factorization cannot take; the message says which and what to do."""


def _check(layer: nn.Module) -> None:
    if isinstance(layer, nn.Linear):
        pass
    elif isinstance(layer, nn.Conv2d):
        problems = [f"{name}={value}" for name, value, ok in (
            ("groups", layer.groups, 1), ("stride", layer.stride, (1, 1)), ("dilation", layer.dilation, (1, 1)),
            ("padding_mode", layer.padding_mode, "zeros")) if value != ok]
        if problems:
            raise LowRankError(f"spatial SVD here takes a plain convolution (groups=1, stride 1, dilation 1, zero "
                               f"padding); this one has {', '.join(problems)}: leave it out of the ranks")
    else:
        raise LowRankError(f"cannot factorize a {type(layer).__name__}: give an nn.Linear or an nn.Conv2d")
    if not torch.isfinite(layer.weight).all():
        raise LowRankError(f"the {type(layer).__name__}'s weight holds NaN or infinity: factorize a trained, "
                           "finite model (check the run that produced it)")


def _matrix(layer: nn.Linear | nn.Conv2d) -> torch.Tensor:
    """The matrix whose SVD factorizes ``layer``: W for a linear layer, M[(i, y), (o, x)] for a convolution."""
    w = layer.weight.detach().double()
    if isinstance(layer, nn.Linear):
        return w
    c_out, c_in, kh, kw = w.shape
    return w.permute(1, 2, 0, 3).reshape(c_in * kh, c_out * kw)


def full_rank(layer: nn.Linear | nn.Conv2d) -> int:
    """The largest rank a factorization of ``layer`` can have (it then reproduces the layer exactly)."""
    _check(layer)
    return min(_matrix(layer).shape)


def singular_values(layer: nn.Linear | nn.Conv2d) -> torch.Tensor:
    """The singular values of the layer's matrix (largest first, float64): the spectrum a rank truncates."""
    _check(layer)
    return torch.linalg.svdvals(_matrix(layer))


def rank_for_energy(values: torch.Tensor, energy: float) -> int:
    """The smallest rank whose singular values keep ``energy`` (in (0, 1]) of the sum of their squares."""
    if not 0 < energy <= 1:
        raise LowRankError(f"energy must be in (0, 1], got {energy}")
    kept = torch.cumsum(values.double() ** 2, 0) / (values.double() ** 2).sum()
    return min(int((kept < energy - 1e-12).sum()) + 1, len(values))


def _svd(layer: nn.Linear | nn.Conv2d, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right factors, each scaled by sqrt(S): ``left @ right`` is the rank-``rank`` truncation."""
    _check(layer)
    matrix = _matrix(layer)
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise LowRankError(f"rank must be a whole number, got {rank!r}")
    if not 1 <= rank <= min(matrix.shape):
        raise LowRankError(f"rank must be between 1 and the layer's full rank {min(matrix.shape)}, got {rank}")
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Two linear layers (in -> rank -> out, the bias on the second) whose product is the rank-``rank`` SVD
    truncation of ``layer``'s weight."""
    left, right = _svd(layer, rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    dtype = layer.weight.dtype
    with torch.no_grad():
        first.weight.copy_(right.to(dtype))
        second.weight.copy_(left.to(dtype))
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device)


def _split_padding(conv: nn.Conv2d) -> tuple[tuple[int, int] | str, tuple[int, int] | str]:
    if isinstance(conv.padding, str):  # "same" or "valid": each factor pads its own direction the same way
        return conv.padding, conv.padding
    return (conv.padding[0], 0), (0, conv.padding[1])


def factorize_conv(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """A vertical (k x 1) convolution to ``rank`` channels, then a horizontal (1 x k) one to ``conv``'s outputs:
    the spatial SVD of ``conv`` truncated to ``rank`` (exact at :func:`full_rank`)."""
    left, right = _svd(conv, rank)
    c_out, c_in, kh, kw = conv.weight.shape
    pad_v, pad_h = _split_padding(conv)
    vertical = nn.Conv2d(c_in, rank, (kh, 1), padding=pad_v, bias=False)
    horizontal = nn.Conv2d(rank, c_out, (1, kw), padding=pad_h, bias=conv.bias is not None)
    dtype = conv.weight.dtype
    with torch.no_grad():
        # left[(i, y), r] -> vertical[r, i, y, 0]; right[r, (o, x)] -> horizontal[o, r, 0, x]
        vertical.weight.copy_(left.T.reshape(rank, c_in, kh, 1).to(dtype))
        horizontal.weight.copy_(right.reshape(rank, c_out, 1, kw).permute(1, 0, 2, 3).to(dtype))
        if conv.bias is not None:
            horizontal.bias.copy_(conv.bias)
    return nn.Sequential(vertical, horizontal).to(conv.weight.device)


def factorizable_layers(model: nn.Module) -> dict[str, nn.Linear | nn.Conv2d]:
    """Name -> layer for every linear layer and every plain k x k (k > 1) convolution: the layers a low-rank
    factorization can make cheaper (a whitening stem, set from the data rather than learned, and 1 x 1
    convolutions are left out)."""
    stem = whitening_stem(model)
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or module is stem:
            continue
        if isinstance(module, nn.Conv2d) and (module.kernel_size == (1, 1) or module.groups != 1
                                              or module.stride != (1, 1) or module.dilation != (1, 1)):
            continue
        found[name] = module
    return found


def factorize(model: nn.Module, ranks: Mapping[str, int] | None = None, energy: float | None = None) -> nn.Module:
    """A copy of ``model`` with layers replaced by their low-rank factorizations: either ``ranks`` (layer name ->
    rank, names as in :func:`factorizable_layers`) or every factorizable layer at the smallest rank that keeps
    ``energy`` of its squared singular values, skipping a layer whose factorization would cost as much as the
    layer. The copy's ``lowrank_ranks`` records the rank of each replaced layer."""
    if (ranks is None) == (energy is None):
        raise LowRankError("give either ranks (layer name -> rank) or energy (a fraction in (0, 1]), not both")
    layers = factorizable_layers(model)
    if ranks is not None:
        unknown = sorted(set(ranks) - set(layers))
        if unknown:
            raise LowRankError(f"no factorizable layer named {unknown}; choose from {sorted(layers)}")
        chosen = dict(ranks)
    else:
        chosen = {name: rank_for_energy(singular_values(layer), energy) for name, layer in layers.items()}
        chosen = {name: r for name, r in chosen.items() if _cheaper(layers[name], r)}
    small = copy.deepcopy(model)
    for name, rank in chosen.items():
        parent_name, _, child = name.rpartition(".")
        parent = small.get_submodule(parent_name) if parent_name else small
        layer = getattr(parent, child)
        try:
            small_layer = (factorize_linear if isinstance(layer, nn.Linear) else factorize_conv)(layer, rank)
        except LowRankError as error:
            raise LowRankError(f"layer {name}: {error}") from None
        setattr(parent, child, small_layer)
    small.lowrank_ranks = chosen
    return small


def _cheaper(layer: nn.Linear | nn.Conv2d, rank: int) -> bool:
    """Whether the two factors at ``rank`` hold fewer weights than ``layer`` (and so cost fewer multiply-adds)."""
    if isinstance(layer, nn.Linear):
        return rank * (layer.in_features + layer.out_features) < layer.weight.numel()
    c_out, c_in, kh, kw = layer.weight.shape
    return rank * (c_in * kh + c_out * kw) < layer.weight.numel()
