"""eval_mode: predictions in eval mode, the model's own mode restored afterwards, even after an error."""

from __future__ import annotations

import pytest
import torch

from labkit import models
from labkit.beyond import feature_shape
from labkit.evaluate import eval_mode, predict_logits


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_mode_after_an_error(training):
    model = models.create("student_small").train(training)
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            assert not model.training and not any(m.training for m in model.modules())
            raise RuntimeError("boom")
    assert model.training is training and all(m.training is training for m in model.modules())


def test_helpers_that_predict_leave_a_training_model_training_even_when_they_fail():
    model = models.create("student_small").train()
    model.head.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("broken head")))
    with pytest.raises(RuntimeError, match="broken head"):
        predict_logits(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="broken head"):
        models.forward_flops(model)
    assert model.training
    assert feature_shape(models.create("student_small").train(), "layers.0")[0] > 0


def test_a_flip_averaged_model_predicts_like_flip_tta_and_is_cached_apart(tmp_path, monkeypatch):
    from labkit.evaluate import FlipAveraged
    from labkit.teacher import FrozenTeacher, fingerprint, teacher_logits_for_views
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = models.create("student_small").eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    averaged = FlipAveraged(model)
    torch.testing.assert_close(predict_logits(averaged, images), predict_logits(model, images, tta="flip"))
    assert fingerprint(FrozenTeacher(averaged)) != fingerprint(FrozenTeacher(model))
    plain = teacher_logits_for_views(FrozenTeacher(model), [images], progress=False)
    flipped = teacher_logits_for_views(FrozenTeacher(averaged), [images], progress=False)
    assert not torch.allclose(plain, flipped)


def test_mistake_agreement_on_a_hand_made_example():
    from labkit.evaluate import mistake_agreement
    labels = torch.tensor([0, 1, 2, 0, 1])
    # the teacher is wrong on images 1, 2 and 3 (predicts 0, 0, 2)
    teacher = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 2, 1]), 3).float()
    student = torch.nn.functional.one_hot(torch.tensor([1, 0, 2, 1, 1]), 3).float()
    result = mistake_agreement(student, teacher, labels)
    # image 1: same mistake (0); image 2: student right (2); image 3: another mistake (1 instead of 2)
    assert result["teacher_wrong"] == 3
    assert result["same_mistake"] == pytest.approx(1 / 3)
    assert result["student_right"] == pytest.approx(1 / 3)
    assert result["other_mistake"] == pytest.approx(1 / 3)
    assert mistake_agreement(teacher, teacher, labels)["same_mistake"] == 1.0
    with pytest.raises(ValueError, match="one row per image"):
        mistake_agreement(student[:4], teacher, labels)
