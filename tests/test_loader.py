"""labkit.loader (04_cifar_teacher, views from 05_distill_student): augmentation, seeded batches, precomputed views."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from labkit.loader import (AIRBENCH, STANDARD, Augment, Loader, _reflect_pad, augment_batch, flip_mask,
                           make_views, random_crop, to_float)


def random_images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def coordinate_images(n: int) -> torch.Tensor:
    """n copies of one image whose channels 0 and 1 hold each pixel's row + 1 and column + 1 (0 is padding)."""
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[0] = torch.arange(1, 33)[:, None]
    image[1] = torch.arange(1, 33)[None, :]
    return image.expand(n, -1, -1, -1).contiguous()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Batches of a few tiny images gain nothing from intra-op threads and lose much when the cores are busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- augmentation ------------------------------------------------------------------------------------------------

def mirror(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


def test_flip_is_an_exact_mirror_where_asked():
    x = random_images(8)
    mask = torch.tensor([True, False] * 4)
    out = random_crop(x, 0, gen(), flips=mask)
    assert torch.equal(out[mask], x[mask][..., torch.arange(31, -1, -1)])
    assert torch.equal(out[~mask], x[~mask])
    assert torch.equal(random_crop(out, 0, gen(), flips=mask), x)


def window_matches(crops: torch.Tensor, x: torch.Tensor, pad: int, pad_mode: str) -> torch.Tensor:
    """n x (2p+1)^2: whether crop i equals window k (row-major offsets) of image i padded by torch's F.pad on float."""
    padded = F.pad(x.float(), (pad,) * 4, mode=pad_mode)
    h, w = x.shape[-2:]
    span = range(2 * pad + 1)
    return torch.stack([(padded[..., dy:dy + h, dx:dx + w] == crops.float()).flatten(1).all(1)
                        for dy in span for dx in span], 1)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
@pytest.mark.parametrize("pad", [1, 4])
def test_each_crop_is_one_window_of_the_padded_image(pad, pad_mode):
    x = random_images(1024)
    crops = random_crop(x, pad, gen(), pad_mode)
    assert crops.dtype == torch.uint8 and crops.shape == x.shape
    matches = window_matches(crops, x, pad, pad_mode)
    # Exactly one window per crop: inside the padded image, and (random pixels) at a single offset.
    assert matches.sum(1).tolist() == [1] * len(x)
    # Offset 0 occurs and is the padded image's top-left window; so does the bottom-right one.
    assert matches[:, 0].any() and matches[:, -1].any()


def test_reflect_padding_refuses_a_pad_as_wide_as_the_image():
    with pytest.raises(ValueError, match="reflect padding"):
        random_crop(random_images(2, size=4), 4, gen(), "reflect")


def test_no_padding_means_no_crop():
    x = random_images(4)
    assert torch.equal(random_crop(x, 0, gen()), x)


def test_crop_offsets_are_uniform():
    pad, n = 4, 8100
    crops = random_crop(coordinate_images(n), pad, gen(1))
    # The centre pixel lies inside the original image for every offset, so it tells the offset.
    dy = crops[:, 0, 16, 16].long() - 1 - 16 + pad
    dx = crops[:, 1, 16, 16].long() - 1 - 16 + pad
    counts = (dy * (2 * pad + 1) + dx).bincount(minlength=(2 * pad + 1) ** 2)
    assert len(counts) == 81 and counts.min() > 0
    assert chisquare(counts.numpy()).pvalue > 1e-3


def test_random_flips_hit_about_half():
    assert abs(flip_mask(10_000, gen(2)).float().mean().item() - 0.5) < 0.03
    out = augment_batch(coordinate_images(2000), Augment(pad=0), gen(3))
    flipped = out[:, 1, 0, 0] == 32  # column 31 now at the left edge
    assert torch.equal(out[flipped], coordinate_images(int(flipped.sum())).flip(-1))
    assert abs(flipped.float().mean().item() - 0.5) < 0.05


def test_no_flip_setting_never_flips():
    x = random_images(64)
    assert torch.equal(augment_batch(x, Augment(pad=0, flip="none"), gen()), x)


@pytest.mark.parametrize("settings", [{"pad": -1}, {"pad_mode": "edge"}, {"flip": "sometimes"}])
def test_invalid_augment_settings_are_refused(settings):
    with pytest.raises(ValueError):
        Augment(**settings)


def test_standard_is_torchvisions_recipe_and_airbench_its_own():
    assert (STANDARD.pad, STANDARD.pad_mode, STANDARD.flip) == (4, "constant", "random")
    assert (AIRBENCH.pad, AIRBENCH.pad_mode, AIRBENCH.flip) == (2, "reflect", "alternate")


def test_to_float_scales_to_unit_range():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 3, 1, 1)
    out = to_float(x)
    assert out.dtype == torch.float32 and out.flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])


# --- the loader --------------------------------------------------------------------------------------------------

N = 100
IMAGES, LABELS = random_images(N), torch.arange(N) % 10


def epochs(loader: Loader, count: int = 2) -> list[list]:
    return [list(loader) for _ in range(count)]


def same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x.images, y.images) and torch.equal(x.index, y.index)
                                    for x, y in zip(a, b))


def test_same_seed_same_batches_other_seed_other_batches():
    run = lambda seed: epochs(Loader(IMAGES, LABELS, 16, augment=STANDARD, seed=seed))
    first, again, other = run(0), run(0), run(1)
    assert all(same_batches(a, b) for a, b in zip(first, again))
    assert not same_batches(first[0], other[0])


def test_epochs_differ_and_a_resumed_loader_sees_the_same_epoch():
    loader = Loader(IMAGES, LABELS, 16, augment=STANDARD)
    epoch0, epoch1 = epochs(loader)
    assert loader.epoch == 2
    assert not same_batches(epoch0, epoch1)
    resumed = Loader(IMAGES, LABELS, 16, augment=STANDARD)
    resumed.epoch = 1
    assert same_batches(list(resumed), epoch1)


def by_index(batches: list) -> torch.Tensor:
    out = torch.empty(N, 3, 32, 32)
    for b in batches:
        out[b.index] = b.images
    return out


def test_alternate_flip_mirrors_every_image_relative_to_the_previous_epoch():
    loader = Loader(IMAGES, LABELS, 16, augment=Augment(pad=0, flip="alternate"), seed=4)
    e0, e1, e2 = (by_index(e) for e in epochs(loader, 3))
    assert torch.equal(e1, e0.flip(-1)) and torch.equal(e2, e0)
    flipped_in_epoch0 = (e0 != to_float(IMAGES)).flatten(1).any(1)
    assert 0 < flipped_in_epoch0.sum() < N


def test_each_epoch_is_a_permutation_with_labels_and_images_in_step():
    batches = list(Loader(IMAGES, LABELS, 16, seed=2))
    index = torch.cat([b.index for b in batches])
    assert sorted(index.tolist()) == list(range(N)) and index.tolist() != list(range(N))
    for b in batches:
        assert torch.equal(b.labels, LABELS[b.index]) and torch.equal(b.images, to_float(IMAGES[b.index]))
        assert b.view == 0 and b.images.dtype == torch.float32


def test_without_shuffle_the_order_is_the_data_sets():
    index = torch.cat([b.index for b in Loader(IMAGES, LABELS, 16, shuffle=False)])
    assert index.tolist() == list(range(N))


@pytest.mark.parametrize("drop_last, length, sizes", [(False, 7, [16] * 6 + [4]), (True, 6, [16] * 6)])
def test_drop_last_and_len(drop_last, length, sizes):
    loader = Loader(IMAGES, LABELS, 16, drop_last=drop_last)
    assert len(loader) == length
    assert [len(b.labels) for b in loader] == sizes
    assert len(Loader(IMAGES, LABELS, 20, drop_last=drop_last)) == 5


def test_channels_last_layout_holds_the_same_values():
    plain = next(iter(Loader(IMAGES, LABELS, 16, augment=STANDARD)))
    cl = next(iter(Loader(IMAGES, LABELS, 16, augment=STANDARD, channels_last=True)))
    assert cl.images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl.images, plain.images)


def test_loader_refuses_mismatched_inputs():
    with pytest.raises(ValueError):
        Loader(IMAGES, LABELS[:-1])
    with pytest.raises(ValueError):
        Loader([IMAGES, IMAGES[:, :, :16]], LABELS)
    with pytest.raises(ValueError):
        Loader(IMAGES, LABELS, batch_size=0)


def test_loader_on_cifar(cifar):
    loader = Loader(cifar.train_images, cifar.train_labels, 32, augment=AIRBENCH, channels_last=True)
    batch = next(iter(loader))
    assert batch.images.shape == (min(32, len(cifar.train_labels)), 3, 32, 32)
    assert 0 <= batch.images.min() and batch.images.max() <= 1


# --- precomputed views -------------------------------------------------------------------------------------------

def _whole(view) -> torch.Tensor:
    return view[:len(view)]


def test_views_are_reproducible_and_seeded():
    views = [_whole(v) for v in make_views(IMAGES, STANDARD, 3, seed=1, chunk=30)]  # a chunk splitting unevenly
    assert all(torch.equal(a, _whole(b)) for a, b in zip(views, make_views(IMAGES, STANDARD, 3, seed=1, chunk=30)))
    assert not torch.equal(views[0], _whole(make_views(IMAGES, STANDARD, 1, seed=2)[0]))
    assert not torch.equal(views[0], views[1])
    assert all(v.dtype == torch.uint8 and v.shape == IMAGES.shape for v in views)


@pytest.mark.parametrize("augment", [STANDARD, AIRBENCH, Augment(pad=0, flip="random"), Augment(pad=3, flip="none")])
def test_view_equals_augmenting_each_chunk_once(augment):
    """Oracle: the stored-copy definition, augment_batch applied chunk by chunk with the view's generator."""
    seed, chunk = 3, 30
    for k, view in enumerate(make_views(IMAGES, augment, 2, seed=seed, chunk=chunk)):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + k)
        flips = (flip_mask(len(IMAGES), torch.Generator().manual_seed(seed)) ^ bool(k % 2)
                 if augment.flip == "alternate" else None)
        stored = torch.cat([augment_batch(IMAGES[s:s + chunk], augment, gen, None if flips is None else flips[s:s + chunk])
                            for s in range(0, len(IMAGES), chunk)])
        assert torch.equal(_whole(view), stored)
        index = torch.randperm(len(IMAGES))[:17]
        assert torch.equal(view[index], stored[index])
        assert torch.equal(torch.cat([view[s:s + 25] for s in range(0, len(IMAGES), 25)]), stored)


def test_alternate_views_mirror_each_other():
    views = make_views(IMAGES, Augment(pad=0, flip="alternate"), 2, seed=4)
    assert torch.equal(_whole(views[1]), _whole(views[0]).flip(-1))


def test_loader_cycles_through_views():
    views = make_views(IMAGES, STANDARD, 3)
    loader = Loader(views, LABELS, 16, seed=5)
    for epoch in range(4):
        for b in loader:
            assert b.view == epoch % 3 and torch.equal(b.images, to_float(views[b.view][b.index]))


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_crop_with_flips_in_one_gather_equals_crop_then_flip(pad_mode):
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    flips = torch.rand(32, generator=torch.Generator().manual_seed(1)) < 0.5
    fused = random_crop(images, 2, torch.Generator().manual_seed(2), pad_mode, flips)
    separate = mirror(random_crop(images, 2, torch.Generator().manual_seed(2), pad_mode), flips)
    assert torch.equal(fused, separate)


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_reflect_padding_equals_torch_reflect_pad(pad):
    """Oracle: F.pad's reflect mode, which only has float kernels."""
    images = random_images(8)
    assert torch.equal(_reflect_pad(images, pad), F.pad(images.float(), (pad,) * 4, mode="reflect").to(torch.uint8))
