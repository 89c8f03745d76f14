"""The course's networks: sizes, FLOPs, the whitening stem, and the [0, 1]-images contract."""

from __future__ import annotations

import warnings

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


def _plain_forward(model: models.CifarNet, x: torch.Tensor) -> torch.Tensor:
    """The same network written out without activation checkpointing (the oracle)."""
    x = model.stem_activ(model.stem(model.normalize(x)))
    for g in model.layers:
        x = g.activ(g.norm1(g.pool(g.conv1(x))))
        x = g.activ(g.norm2(g.conv2(x)))
    return model.head(model.pool(x).flatten(1)) * model.logit_scale


def _saved_bytes(fn) -> dict[torch.dtype, int]:
    """Bytes of the tensors autograd keeps for the backward pass, by dtype."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = (t.untyped_storage().nbytes(), t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    kept = {}
    for nbytes, dtype in storages.values():
        kept[dtype] = kept.get(dtype, 0) + nbytes
    return kept


@pytest.mark.parametrize("name", ["teacher", "student_small"])
def test_recomputed_stem_and_pools_give_the_same_step_with_less_memory(name):
    torch.manual_seed(0)
    model = models.create(name).train()
    oracle = models.create(name).train()
    oracle.load_state_dict(model.state_dict())
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()
    F.cross_entropy(_plain_forward(oracle, x), y).backward()
    for (name_, p), q in zip(model.named_parameters(), oracle.parameters()):
        assert (p.grad is None) == (q.grad is None), name_
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name_)
    for (name_, b), c in zip(model.named_buffers(), oracle.buffers()):  # BatchNorm statistics updated once
        torch.testing.assert_close(b, c, rtol=0, atol=0, msg=name_)
    kept = _saved_bytes(lambda: model(x))
    kept_plain = _saved_bytes(lambda: _plain_forward(oracle, x))
    assert kept[torch.int64] == len(x) * model.head.in_features * 8  # only the global max-pool's indices remain
    assert sum(kept.values()) < 0.9 * sum(kept_plain.values()), (kept, kept_plain)
    with torch.no_grad():  # eval mode and no_grad run the plain path
        torch.testing.assert_close(model.eval()(x), _plain_forward(oracle.eval(), x), rtol=0, atol=0)


def test_a_model_for_fewer_classes_differs_only_in_its_head():
    torch.manual_seed(0)
    ten = models.create("student_small")
    torch.manual_seed(0)
    five = models.create("student_small", num_classes=5)
    body = [k for k in ten.state_dict() if not k.startswith("head.")]
    assert all(torch.equal(ten.state_dict()[k], five.state_dict()[k]) for k in body), "the same draws before the head"
    assert five.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 5) and five.config["num_classes"] == 5
    with pytest.raises(ValueError, match="num_classes"):
        models.create("student_small", num_classes=0)


@pytest.mark.parametrize("name", ["teacher", "student_small"])
def test_uint8_images_give_the_logits_of_the_same_images_in_0_1(name):
    model = models.create(name).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(images), model(images.float() / 255))


def test_float_images_far_outside_0_1_get_a_warning_that_says_what_to_pass():
    model = models.create("student_small").eval()
    images = torch.randint(0, 256, (2, 3, 32, 32)).float()
    with torch.no_grad(), pytest.warns(models.InputRangeWarning, match="divide 0..255 floats by 255"):
        model(images)
    with torch.no_grad(), pytest.warns(models.InputRangeWarning, match="do not normalise them yourself"):
        model(models.Normalize()(images / 255))


def test_float_images_in_0_1_pass_without_a_warning():
    model = models.create("student_small").eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", models.InputRangeWarning)
        model(torch.rand(2, 3, 32, 32))


def test_the_training_step_does_not_pay_for_the_range_check():
    model = models.create("student_small").train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", models.InputRangeWarning)
        model(torch.randint(0, 256, (2, 3, 32, 32)).float())
