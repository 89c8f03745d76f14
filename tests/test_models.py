"""The course's networks: sizes, FLOPs, the whitening stem, and the [0, 1]-images contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from labkit import models


def test_registry_and_unknown_name():
    assert {"teacher", "student_small", "student_medium"} <= set(models.available())
    with pytest.raises(ValueError, match="unknown model"):
        models.create("resnet")


def test_sizes_match_the_course_plan():
    teacher = models.create("teacher")
    assert 1.9e6 < models.count_parameters(teacher) < 2.1e6  # airbench94: ~2M parameters
    assert 0.22e9 < models.forward_flops(teacher) < 0.26e9  # ~0.24 GFLOP per image
    for name in ("student_small", "student_medium"):
        student = models.create(name)
        assert models.count_parameters(student) <= models.count_parameters(teacher) / 5
        assert models.forward_flops(student) < models.forward_flops(teacher) / 4


@pytest.mark.parametrize("name", ["teacher", "student_small", "student_medium"])
def test_models_map_images_to_logits(name):
    model = models.create(name).eval()
    out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert isinstance(model.normalize, models.Normalize)


def test_normalize_uses_cifar_statistics():
    norm = models.Normalize()
    x = torch.tensor(models.CIFAR10_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(norm(x), torch.zeros(1, 3, 2, 2), atol=1e-6)


def test_whitening_stem_decorrelates_patches():
    # Smooth random images have strongly correlated neighbouring pixels, like photographs.
    gen = torch.Generator().manual_seed(0)
    images = F.interpolate(torch.rand(200, 3, 8, 8, generator=gen), size=32, mode="bilinear").clamp(0, 1)
    model = models.create("teacher")
    models.init_whitening(model, images)
    with torch.no_grad():
        out = model.stem(model.normalize(images)) - model.stem.bias.view(1, -1, 1, 1)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()  # the other 12 filters are the negatives
    cov = half.T @ half / len(half)
    off_diagonal = cov - torch.diag(cov.diag())
    assert off_diagonal.abs().max() < 1e-3
    # Unit variance, except where the eps regulariser damps directions of almost no variance.
    assert (cov.diag() < 1.001).all() and (cov.diag()[:8] > 0.99).all(), cov.diag()
    assert torch.equal(model.stem.weight[12:], -model.stem.weight[:12])


def test_whitening_needs_a_whitening_model():
    with pytest.raises(ValueError, match="whiten=True"):
        models.init_whitening(models.create("student_small"), torch.rand(4, 3, 32, 32))
