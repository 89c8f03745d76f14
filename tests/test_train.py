"""The training engine on a small real-CIFAR subset: learning, distillation, frozen teacher, resume, NaN guard."""

from __future__ import annotations

import pytest
import torch

from labkit import models
from labkit.data import CifarData
from labkit.teacher import FrozenTeacher, teacher_logits_for_views
from labkit.train import NonFiniteLossError, TrainConfig, distill, lr_schedule, train

FAST = dict(batch_size=100, progress=False)


@pytest.fixture(scope="module")
def small_cifar(local_cifar):
    return local_cifar.subset(train_per_class=100, test_per_class=50, seed=0)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def trained_small(small_cifar):
    """A student_small trained briefly with labels: a cheap stand-in teacher for distillation tests."""
    torch.manual_seed(0)
    model = models.create("student_small")
    history = train(model, small_cifar, epochs=4, **FAST)
    return model, history


def test_short_training_beats_chance_clearly(trained_small):
    _, history = trained_small
    assert history.last["test_acc"] > 0.25, history  # chance is 0.10
    assert history["epoch"] == [1, 2, 3, 4]
    assert {"loss", "train_acc", "test_acc", "seconds", "images_per_s"} <= set(history.columns)


def test_schedule_warms_up_then_decays():
    config = TrainConfig()
    s = lr_schedule(100, config)
    assert len(s) == 101
    assert s[0] == pytest.approx(config.warmup_start) and s.max() == pytest.approx(1.0)
    assert s[-1] == pytest.approx(config.final_lr)
    peak = int(s.argmax())
    assert (s[1:peak + 1] >= s[:peak]).all() and (s[peak + 1:] <= s[peak:-1]).all()


def _teacher_snapshot(teacher):
    return {k: v.clone() for k, v in teacher.state_dict().items()}


@pytest.mark.parametrize("views", [2, 0], ids=["cached-logits", "online"])
def test_distillation_learns_and_keeps_the_teacher_frozen(small_cifar, trained_small, private_cache, views):
    teacher, _ = trained_small
    before = _teacher_snapshot(teacher)
    torch.manual_seed(1)
    student = models.create("student_small")
    history = distill(student, teacher, small_cifar, T=4.0, alpha=0.7, epochs=3, teacher_views=views, **FAST)
    assert history.last["test_acc"] > 0.2
    assert {"kl_part", "ce_part", "agreement", "test_kl"} <= set(history.columns)
    assert history.last["agreement"] > history.rows[0]["agreement"] - 0.05
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "teacher weights or BN statistics changed"
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.training


def test_frozen_teacher_stays_in_eval_mode_and_gives_no_gradients(trained_small):
    teacher = FrozenTeacher(trained_small[0])
    teacher.train()
    assert not teacher.training and not teacher.model.training
    teacher.model.train()  # behind the wrapper's back
    running_mean = teacher.model.layers[0].norm1.running_mean.clone()
    out = teacher(torch.rand(8, 3, 32, 32, requires_grad=True))
    assert not teacher.model.training
    assert out.grad_fn is None and not out.requires_grad
    assert torch.equal(running_mean, teacher.model.layers[0].norm1.running_mean)


def test_teacher_logits_are_cached_and_reused(small_cifar, trained_small, private_cache):
    teacher = FrozenTeacher(trained_small[0])
    views = [small_cifar.test_images]
    first = teacher_logits_for_views(teacher, views, progress=False)
    files = list((private_cache / "teacher_logits").glob("*.pt"))
    assert len(files) == 1
    calls = []
    handle = teacher.model.register_forward_hook(lambda *a: calls.append(1))
    second = teacher_logits_for_views(teacher, views, progress=False)
    handle.remove()
    assert calls == [] and torch.equal(first, second)
    assert torch.allclose(first[0], teacher(small_cifar.test_images[:500].float() / 255), atol=1e-5)


def test_training_on_an_image_subset_equals_training_on_its_copy(small_cifar, trained_small, private_cache):
    keep = torch.arange(len(small_cifar.train_labels)) % 3 != 0
    subset = small_cifar.keep_train(keep)
    copy = CifarData(small_cifar.train_images[keep], small_cifar.train_labels[keep], small_cifar.test_images,
                     small_cifar.test_labels)
    teacher = FrozenTeacher(trained_small[0])
    students = []
    for data in (subset, copy):
        torch.manual_seed(0)
        student = models.create("student_small")
        history = distill(student, teacher, data, T=4.0, alpha=0.5, epochs=2, teacher_views=2, **FAST)
        students.append((student, history))
    # One file for the test images, one for the training views: the subset's views hit the copy's cache entry.
    assert len(list((private_cache / "teacher_logits").glob("*.pt"))) == 2
    (a, history_a), (b, history_b) = students
    untimed = lambda h: [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in h.rows]
    assert untimed(history_a) == untimed(history_b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_after_interrupt_reproduces_the_uninterrupted_run(small_cifar, tmp_path):
    def run(out, **kwargs):
        torch.manual_seed(3)
        model = models.create("student_small")
        train(model, small_cifar, epochs=2, out=out, **FAST, **kwargs)
        return model

    reference = run(tmp_path / "a")

    def interrupt(step):
        if step == 13:  # in the second epoch (10 steps per epoch)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", on_step=interrupt)
    resumed = run(tmp_path / "b", resume=True)
    ref, res = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(ref[k], res[k]) for k in ref)
    assert (tmp_path / "b" / "history.csv").read_text() != ""


def test_nan_loss_is_reported_with_epoch_and_step(small_cifar):
    model = models.create("student_small")
    model.head.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1\b"):
        train(model, small_cifar, epochs=1, **FAST)


def test_runs_sharing_views_seed_share_the_teacher_logits(small_cifar, trained_small, private_cache):
    teacher = trained_small[0]
    histories = []
    for seed in (1, 2):
        torch.manual_seed(0)
        histories.append(distill(models.create("student_small"), teacher, small_cifar, epochs=1, teacher_views=1,
                                 seed=seed, views_seed=0, **FAST))
    cached = list((private_cache / "teacher_logits").glob("*.pt"))
    assert len(cached) == 2  # the training views' logits (shared) and the test images' logits
    assert histories[0].last["loss"] != histories[1].last["loss"]  # other seeds: other batch orders
    torch.manual_seed(0)
    distill(models.create("student_small"), teacher, small_cifar, epochs=1, teacher_views=1, seed=3, **FAST)
    assert len(list((private_cache / "teacher_logits").glob("*.pt"))) == 3  # its own views


def test_online_teacher_runs_before_the_student_so_their_activations_never_coexist(small_cifar, trained_small):
    teacher, _ = trained_small
    student, order = models.create("student_small"), []
    hooks = [m.register_forward_pre_hook(lambda *_, who=who: order.append(who))
             for m, who in ((teacher, "teacher"), (student, "student"))]
    try:
        distill(student, teacher, small_cifar, epochs=0.2, teacher_views=0, on_step=lambda _: order.append("|"),
                **FAST)
    finally:
        for h in hooks:
            h.remove()
    second_step = order[order.index("|") + 1:order.index("|", order.index("|") + 1)]
    assert second_step == ["teacher", "student"], order
