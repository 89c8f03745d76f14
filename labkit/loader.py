"""Batches drawn from whole-data-set tensors, augmented on the batch (introduced in 04_cifar_teacher).

In the style of airbench: no per-image Python work, no DataLoader workers; a batch is cropped and flipped
with a few tensor operations while still ``uint8``, then scaled to float in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Random-crop-with-padding and horizontal-flip settings.

    The defaults equal torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``.
    ``flip="alternate"`` is airbench's variant: each image gets a random flip in epoch 0 and the opposite
    flip every other epoch, so consecutive epochs always see both orientations.
    """

    pad: int = 4
    pad_mode: str = "constant"  # "constant" pads with zeros like torchvision; "reflect" mirrors the border
    flip: str = "random"  # "random", "alternate" or "none"

    def __post_init__(self):
        if self.pad < 0 or self.pad_mode not in ("constant", "reflect") or self.flip not in ("random", "alternate", "none"):
            raise ValueError(f"invalid augmentation settings: {self}")


STANDARD = Augment()
AIRBENCH = Augment(pad=2, pad_mode="reflect", flip="alternate")


def random_crop(images: torch.Tensor, pad: int, generator: torch.Generator, pad_mode: str = "constant",
                flips: torch.Tensor | None = None) -> torch.Tensor:
    """Pad every image by ``pad`` pixels and cut a random window of the original size out of each.

    ``flips`` (a boolean per image) also mirrors those images.
    """
    if pad == 0 and flips is None:
        return images
    return crop(images, pad, crop_offsets(len(images), pad, generator), pad_mode, flips)


def crop_offsets(n: int, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random window corners for ``n`` images padded by ``pad``: a 2 x n x 1 tensor of (row, column) offsets."""
    return torch.randint(0, 2 * pad + 1, (2, n, 1), generator=generator)


def crop(images: torch.Tensor, pad: int, offsets: torch.Tensor, pad_mode: str = "constant",
         flips: torch.Tensor | None = None) -> torch.Tensor:
    """Pad by ``pad`` and cut each image's window at ``offsets`` (from :func:`crop_offsets`), mirroring ``flips``."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad,) * 4, mode=pad_mode) if pad_mode == "constant" else _reflect_pad(images, pad)
    # Sorted by window, each run of equal windows is one plain slice: ~5x faster than a 4-D gather of every pixel.
    side = 2 * pad + 1
    windows = (offsets[0] * side + offsets[1]).flatten()
    order = windows.argsort()
    counts = torch.bincount(windows, minlength=side * side).tolist()
    starts = [0] + torch.tensor(counts).cumsum(0).tolist()
    padded = padded[order]
    parts = [padded[starts[k]:starts[k + 1], :, k // side:k // side + h, k % side:k % side + w]
             for k in range(side * side) if counts[k]]
    out = torch.empty_like(images)
    out[order] = torch.cat(parts) if parts else images
    # Flips and offsets are drawn on the CPU, whatever device holds the images.
    return out if flips is None else torch.where(flips.to(out.device)[:, None, None, None], out.flip(-1), out)


def _reflect_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    # F.pad's reflect mode has no uint8 kernel; mirrored slices reflect just the same, within the same limit.
    h, w = images.shape[-2:]
    if pad >= min(h, w):
        raise ValueError(f"reflect padding needs pad < image size, got pad={pad} for size {min(h, w)}")
    if pad == 0:
        return images
    rows = torch.cat([images[..., 1:pad + 1, :].flip(-2), images, images[..., -pad - 1:-1, :].flip(-2)], -2)
    return torch.cat([rows[..., 1:pad + 1].flip(-1), rows, rows[..., -pad - 1:-1].flip(-1)], -1)


def flip_mask(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random boolean per image: which ones to mirror."""
    return torch.rand(n, generator=generator) < 0.5


def augment_batch(images: torch.Tensor, aug: Augment, generator: torch.Generator,
                  flips: torch.Tensor | None = None) -> torch.Tensor:
    """Crop and flip one batch; ``flips`` overrides the random flip mask (used for ``flip="alternate"``)."""
    if flips is None and aug.flip == "random":
        flips = flip_mask(len(images), generator)
    return random_crop(images, aug.pad, generator, aug.pad_mode, flips)


def to_float(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 images to float32 in [0, 1], optionally in channels_last memory layout (faster convs on CPU)."""
    x = images.float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Batch(NamedTuple):
    """One batch yielded by :class:`Loader` (introduced in 04_cifar_teacher)."""

    images: torch.Tensor  # float in [0, 1]
    labels: torch.Tensor
    index: torch.Tensor  # positions in the data set, to look up per-example extras such as teacher logits
    view: int  # which precomputed view the batch came from (0 when augmenting on the fly)


class Loader:
    """Seeded, shuffled batches over uint8 images, augmented per batch (introduced in 04_cifar_teacher).

    ``images`` is one N x 3 x H x W tensor, or a list of K precomputed augmented views of it; with views,
    epoch e reads view ``e % K`` (so cached teacher logits of each view can be reused). Iterating runs one
    epoch and advances :attr:`epoch`; the order and augmentation of epoch e depend only on (seed, e), so a
    resumed run that sets ``loader.epoch`` sees the same batches.
    """

    def __init__(self, images: torch.Tensor | list[torch.Tensor], labels: torch.Tensor, batch_size: int = 256, *,
                 augment: Augment | None = None, shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 channels_last: bool = False):
        self.views = list(images) if isinstance(images, (list, tuple)) else [images]
        for view in self.views:
            if getattr(view, "dtype", torch.uint8) != torch.uint8:
                raise ValueError(f"Loader wants uint8 images (0..255, as load_cifar10 gives them), got {view.dtype}: "
                                 "for float images in [0, 1] pass (images * 255).round().to(torch.uint8)")
        if any(v.shape != self.views[0].shape for v in self.views) or len(self.views[0]) != len(labels):
            raise ValueError("every view must have the shape of the others and one label per image")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.labels, self.batch_size, self.augment = labels, batch_size, augment
        self.shuffle, self.drop_last, self.seed, self.channels_last = shuffle, drop_last, seed, channels_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        view = epoch % len(self.views)
        images, n = self.views[view], len(self.labels)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        flips = _alternate_flips(n, self.seed, epoch) if self.augment and self.augment.flip == "alternate" else None
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = images[idx]
            if self.augment is not None:
                x = augment_batch(x, self.augment, gen, None if flips is None else flips[idx])
            yield Batch(to_float(x, self.channels_last), self.labels[idx], idx, view)


def _alternate_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    base = flip_mask(n, torch.Generator().manual_seed(seed))
    return base ^ bool(epoch % 2)


class AugmentedView:
    """One fixed augmented copy of a uint8 image tensor, kept as each image's crop window and flip.

    Introduced in 05_distill_student. Indexing (``view[idx]``, ``view[a:b]``) returns the augmented uint8 images,
    equal to cropping and flipping them once and storing the result, but a view costs 17 bytes per image
    instead of a full copy of the data set: four views of CIFAR-10 would otherwise take 0.6 GB.
    """

    def __init__(self, images: torch.Tensor, augment: Augment, offsets: torch.Tensor, flips: torch.Tensor | None):
        self.images, self.augment, self.offsets, self.flips = images, augment, offsets, flips

    @property
    def shape(self) -> torch.Size:
        return self.images.shape

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        flips = None if self.flips is None else self.flips[index]
        return crop(self.images[index], self.augment.pad, self.offsets[:, index], self.augment.pad_mode, flips)


def make_views(images: torch.Tensor, augment: Augment, num_views: int, seed: int = 0,
               chunk: int = 10_000) -> list[AugmentedView]:
    """``num_views`` fixed augmented copies of ``images`` (uint8), reproducible from ``seed`` (and ``chunk``,
    which sets how the random draws are grouped: change it and the views change too).

    Introduced in 05_distill_student: the teacher's logits are computed once per view and reused by every
    student run. View k of ``flip="alternate"`` uses epoch k's orientation. The draws are those of
    :func:`augment_batch` on each chunk in turn, so view k equals augmenting chunk after chunk with its generator.
    """
    views, n = [], len(images)
    for k in range(num_views):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + k)
        flips = _alternate_flips(n, seed, k) if augment.flip == "alternate" else None
        chunk_flips, offsets = [], []
        for s in range(0, n, chunk):
            size = min(chunk, n - s)
            if augment.flip == "random":
                chunk_flips.append(flip_mask(size, gen))
            offsets.append(crop_offsets(size, augment.pad, gen))
        if chunk_flips:
            flips = torch.cat(chunk_flips)
        views.append(AugmentedView(images, augment, torch.cat(offsets, 1), flips))
    return views


def mixup(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blend every image with a random partner from the same batch, ``lam * x + (1 - lam) * partner``.

    Introduced in 08_beyond_logits for function matching (Beyer et al., 2022): teacher and student see the
    same blend, so no label is needed. ``lam`` is drawn per image from Uniform(0, 1) (mixup's Beta(1, 1)).
    Works on float images; the result stays in [0, 1] when the inputs are.
    """
    if not images.is_floating_point():
        raise ValueError(f"mixup needs float images in [0, 1], got {images.dtype}")
    n = len(images)
    partner = torch.randperm(n, generator=generator)
    lam = torch.rand(n, 1, 1, 1, generator=generator)
    return (lam * images + (1 - lam) * images[partner]).contiguous(memory_format=_layout(images))


def _layout(images: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format
