"""A teacher is identified by what it computes, not only by its weights (labkit.teacher.teacher_identity): the
teacher-logit cache, the protocol's stored runs and resume checks key on it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labkit import models
from labkit.protocol import describe_option
from labkit.teacher import FrozenTeacher, fingerprint, short_identity, teacher_identity, teacher_logits_for_views


class Tempered(nn.Module):
    """A learner's wrapper: the teacher's logits divided by a temperature."""

    def __init__(self, teacher: nn.Module, T: float):
        super().__init__()
        self.teacher, self.T = teacher, T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x) / self.T


class Shifted(Tempered):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x) - self.T


def small() -> nn.Module:
    torch.manual_seed(0)
    return models.create("student_small")


@pytest.mark.parametrize("arch", models.available())
def test_a_labkit_model_as_labkit_builds_it_keeps_its_fingerprint(arch: str):
    model = models.create(arch)
    assert teacher_identity(model) == fingerprint(model)
    assert teacher_identity(FrozenTeacher(model)) == fingerprint(FrozenTeacher(model))  # kept runs keep their names
    assert short_identity(model) == fingerprint(model)[:16]


def test_a_wrapper_is_told_apart_by_its_settings_and_its_code():
    teacher = small()
    t1, t4 = teacher_identity(Tempered(teacher, 1.0)), teacher_identity(Tempered(teacher, 4.0))
    assert len({t1, t4, teacher_identity(Shifted(teacher, 1.0)), teacher_identity(teacher)}) == 4
    assert teacher_identity(Tempered(teacher, 4.0)) == t4  # the same wrapper, the same key
    assert t4.startswith(fingerprint(Tempered(teacher, 4.0)) + "+")


def test_a_changed_logit_scale_changes_the_identity_and_the_default_gives_it_back():
    teacher = small()
    plain = teacher_identity(teacher)
    teacher.logit_scale = 0.25
    assert teacher_identity(teacher) != plain
    teacher.logit_scale = 1 / 9
    assert teacher_identity(teacher) == plain


def test_the_logit_cache_does_not_hand_a_tempered_teacher_the_logits_of_another_temperature(isolated_cache):
    teacher = small().eval()
    views = [torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))]
    at_1 = teacher_logits_for_views(Tempered(teacher, 1.0), views, progress=False)
    at_4 = teacher_logits_for_views(Tempered(teacher, 4.0), views, progress=False)
    torch.testing.assert_close(at_4, at_1 / 4, rtol=1e-4, atol=1e-5)
    teacher.logit_scale = 0.5
    rescaled = teacher_logits_for_views(teacher, views, progress=False)
    torch.testing.assert_close(rescaled, at_1 * 0.5 * 9, rtol=1e-4, atol=1e-4)


def test_stored_runs_name_two_wrapped_teachers_apart():
    teacher = small()
    assert describe_option(Tempered(teacher, 1.0)) != describe_option(Tempered(teacher, 4.0))
    assert describe_option(teacher) == fingerprint(teacher)[:16]
