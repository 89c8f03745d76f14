"""Feature hints, mixup and function matching: hooks, shapes, validation, and short real-data runs."""

from __future__ import annotations

import pytest
import torch

from labkit import models
from labkit.beyond import (FeatureTap, HintRegressor, distill_with_hints, feature_shape, function_matching,
                           hint_loss)
from labkit.loader import mixup
from labkit.train import distill


def test_feature_tap_keeps_the_layer_output_and_removes_its_hook():
    model = models.create("student_small").eval()
    x = torch.rand(2, 3, 32, 32)
    layer = model.get_submodule("layers.1")
    with FeatureTap(model, "layers.1") as tap:
        model(x)
        torch.testing.assert_close(tap.output, layer(model.layers[0](model.stem_activ(model.stem(model.normalize(x))))))
    assert not layer._forward_hooks
    with pytest.raises(ValueError, match="no submodule 'layers.7'"):
        FeatureTap(model, "layers.7")


def test_feature_shapes_of_the_course_models():
    assert feature_shape(models.create("student_small"), "layers.1") == (48, 8, 8)
    assert feature_shape(models.create("teacher"), "layers.1") == (256, 7, 7)


def test_regressor_maps_student_features_onto_the_teacher_grid():
    regressor = HintRegressor(48, 256)
    out = regressor(torch.randn(4, 48, 8, 8), (7, 7))
    assert out.shape == (4, 256, 7, 7)
    a, b = torch.randn(4, 256, 7, 7), torch.randn(4, 256, 7, 7)
    torch.testing.assert_close(hint_loss(a, b), ((a - b) ** 2).mean())
    with pytest.raises(ValueError, match="differ in shape"):
        hint_loss(torch.randn(4, 48, 8, 8), b)


def test_mixup_blends_each_image_with_one_partner():
    values = torch.linspace(0, 1, 16)
    images = values[:, None, None, None].expand(16, 3, 4, 4).contiguous()
    mixed = mixup(images, torch.Generator().manual_seed(0))
    flat = mixed.flatten(1)
    assert torch.allclose(flat, flat[:, :1].expand_as(flat))  # one blend weight per image
    assert (mixed >= 0).all() and (mixed <= 1).all()
    again = mixup(images, torch.Generator().manual_seed(0))
    assert torch.equal(mixed, again)
    assert not torch.equal(mixed, images)
    cl = images.contiguous(memory_format=torch.channels_last)
    assert mixup(cl, torch.Generator().manual_seed(0)).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="float images"):
        mixup(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.Generator())


@pytest.fixture(scope="module")
def tiny(local_cifar):
    return local_cifar.subset(train_per_class=20, test_per_class=5, seed=0)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(5)
    return models.create("student_medium").eval()  # an untrained stand-in: what is tested is the plumbing


def test_mixed_batches_need_the_online_teacher_and_no_labels(tiny, teacher):
    student = models.create("student_small")
    with pytest.raises(ValueError, match="teacher_views=0"):
        distill(student, teacher, tiny, alpha=1.0, teacher_views=2, mix=mixup, epochs=1)
    with pytest.raises(ValueError, match="alpha=1"):
        distill(student, teacher, tiny, alpha=0.5, teacher_views=0, mix=mixup, epochs=1)
    with pytest.raises(ValueError, match="online teacher"):
        distill_with_hints(student, teacher, tiny, teacher_views=2, epochs=1)


def test_hint_training_runs_and_leaves_the_teacher_alone(tiny, teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(0)
    student = models.create("student_small")
    start = {k: v.clone() for k, v in student.state_dict().items()}
    history = distill_with_hints(student, teacher, tiny, epochs=2, beta=2.0, batch_size=50, progress=False,
                                 teacher_layer="layers.1")
    assert len(history.rows) == 2 and all(v > 0 for v in history["extra_part"])
    assert any(not torch.equal(start[k], v) for k, v in student.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not student.get_submodule("layers.1")._forward_hooks  # the taps are gone after training


def test_function_matching_trains_on_what_the_teacher_sees(tiny, teacher, monkeypatch):
    seen = []
    original = teacher.forward
    monkeypatch.setattr(teacher, "forward", lambda x: seen.append(x) or original(x))
    torch.manual_seed(0)
    student = models.create("student_small")
    history = function_matching(student, teacher, tiny, epochs=1, batch_size=50, progress=False)
    assert torch.isfinite(torch.tensor(history["loss"])).all()
    train_batches = [x for x in seen if len(x) == 50]
    assert train_batches, "the teacher must be asked about every training batch"
    # Mixed images: no pixel pattern equals a crop of a single training image's quantised values.
    assert any(((x * 255) - (x * 255).round()).abs().max() > 1e-3 for x in train_batches)
