"""The training engine on a small real-CIFAR subset: learning, distillation, frozen teacher, resume, NaN guard."""

from __future__ import annotations

import pytest
import torch

from labkit import device, models
from labkit.data import CifarData, ImageSubset
from labkit.distributed import SingleProcess
from labkit.models import init_whitening, is_whitened
from labkit.pretrained import load_pretrained
from labkit.distillation import kl_at_temperature
from labkit.evaluate import predict_logits
from labkit.teacher import FrozenTeacher, teacher_logits_for_views
from labkit.train import (ChanceLevelWarning, NoTrainingStepsError, NonFiniteLossError, NonFiniteWeightsError,
                          ResumeError, TrainConfig, distill, lr_schedule, prepare_for_training, train)

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
    trainable = [p.requires_grad for p in teacher.parameters()]  # BatchNorm gains are frozen by design
    torch.manual_seed(1)
    student = models.create("student_small")
    history = distill(student, teacher, small_cifar, T=4.0, alpha=0.7, epochs=3, teacher_views=views, **FAST)
    assert history.last["test_acc"] > 0.2
    assert {"kl_part", "ce_part", "test_agreement", "test_kl"} <= set(history.columns)
    assert history.last["test_agreement"] > history.rows[0]["test_agreement"] - 0.05
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "teacher weights or BN statistics changed"
    assert [p.requires_grad for p in teacher.parameters()] == trainable, "the caller's teacher can still be trained"


def test_frozen_teacher_predicts_in_eval_mode_without_gradients_and_leaves_the_model_as_it_was(trained_small):
    model = trained_small[0].train()
    trainable = [p.requires_grad for p in model.parameters()]
    teacher = FrozenTeacher(model)
    teacher.train()
    assert not teacher.training and model.training, "the wrapper's mode is not passed on to the caller's model"
    running_mean = model.layers[0].norm1.running_mean.clone()
    x = torch.rand(8, 3, 32, 32, requires_grad=True)
    out = teacher(x)
    assert out.grad_fn is None and not out.requires_grad
    assert torch.equal(running_mean, model.layers[0].norm1.running_mean), "BatchNorm statistics fixed"
    assert model.training and [p.requires_grad for p in model.parameters()] == trainable, "given back as it was"
    with torch.no_grad():
        assert torch.equal(out, model.eval()(x)), "the prediction of the model in eval mode"


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


def test_nan_logits_while_distilling_are_reported_with_epoch_and_step(small_cifar, trained_small, private_cache):
    model = models.create("student_small")
    model.head.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1\b"):
        distill(model, trained_small[0], small_cifar, epochs=1, teacher_views=0, **FAST)


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


# --- failures that used to be silent ------------------------------------------------------------------------------

def test_a_batch_larger_than_the_training_set_is_an_error_not_zero_steps(small_cifar):
    tiny = small_cifar.subset(train_per_class=20, test_per_class=10)  # 200 images, default batch 1024
    with pytest.raises(NoTrainingStepsError, match=r"200 training images.*batch of 1024.*batch_size <= 200"):
        train(models.create("student_small"), tiny, epochs=2, progress=False)
    with pytest.raises(NoTrainingStepsError):
        distill(models.create("student_small"), models.create("student_small"), tiny, epochs=1, progress=False)


def test_resume_refuses_a_checkpoint_written_with_other_settings(small_cifar, tmp_path, trained_small, private_cache):
    train(models.create("student_small"), small_cifar, epochs=1, out=tmp_path / "t", **FAST)
    with pytest.raises(ResumeError, match=r"lr: 11.5 in the checkpoint, 5.0 now"):
        train(models.create("student_small"), small_cifar, epochs=1, out=tmp_path / "t", resume=True, lr=5.0, **FAST)
    with pytest.raises(ResumeError, match=r"epochs"):
        train(models.create("student_small"), small_cifar, epochs=2, out=tmp_path / "t", resume=True, **FAST)
    other_images = small_cifar.subset(train_per_class=90, seed=1)  # another training set
    with pytest.raises(ResumeError, match=r"data: '[0-9a-f]+' in the checkpoint"):
        train(models.create("student_small"), other_images, epochs=1, out=tmp_path / "t", resume=True, **FAST)
    teacher = trained_small[0]
    distill(models.create("student_small"), teacher, small_cifar, T=2.0, epochs=1, teacher_views=1,
            out=tmp_path / "d", **FAST)
    with pytest.raises(ResumeError, match=r"T: 2.0 in the checkpoint, 4.0 now"):
        distill(models.create("student_small"), teacher, small_cifar, T=4.0, epochs=1, teacher_views=1,
                out=tmp_path / "d", resume=True, **FAST)
    with pytest.raises(ResumeError, match=r"data:"):  # a finished run is not returned for other training data
        distill(models.create("student_small"), teacher, small_cifar.subset(train_per_class=90, seed=7), T=2.0,
                epochs=1, teacher_views=1, out=tmp_path / "d", resume=True, **FAST)
    with pytest.raises(ResumeError, match=r"kind"):  # a distillation checkpoint is not a training one
        train(models.create("student_small"), small_cifar, epochs=1, out=tmp_path / "d", resume=True, **FAST)


def test_an_unreadable_checkpoint_is_named(small_cifar, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ResumeError, match=r"checkpoint\.pt cannot be read"):
        train(models.create("student_small"), small_cifar, epochs=1, out=tmp_path / "run", resume=True, **FAST)


def test_out_pointing_to_a_file_fails_before_training(small_cifar, tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("not a folder")
    steps = []
    with pytest.raises(NotADirectoryError, match="is a file"):
        train(models.create("student_small"), small_cifar, epochs=1, out=taken, on_step=steps.append, **FAST)
    assert steps == []


def test_a_collapse_to_chance_is_warned_about(small_cifar):
    torch.manual_seed(0)
    with pytest.warns(ChanceLevelWarning, match=r"chance level.*learning rate"):
        train(models.create("student_small"), small_cifar, epochs=2, lr=1e6, **FAST)


def test_infinite_batchnorm_statistics_are_reported_by_name(small_cifar):
    torch.manual_seed(0)
    with pytest.raises(NonFiniteWeightsError, match=r"after epoch 1 .*running_var"):
        train(models.create("student_small"), small_cifar, epochs=2, lr=1e12, **FAST)


def test_distilling_into_a_whitened_model_prepares_it_like_training_does(small_cifar, trained_small, private_cache,
                                                                         monkeypatch):
    from labkit import train as engine
    seen = []
    monkeypatch.setattr(engine, "processes", lambda **kw: seen.append(kw) or SingleProcess())
    torch.manual_seed(0)
    student = models.create("teacher")
    expected = models.create("teacher")
    init_whitening(expected, small_cifar.train_images[:5000].float() / 255)
    distill(student, trained_small[0], small_cifar, epochs=0.1, teacher_views=1, **FAST)
    assert seen == [{"find_unused_parameters": True}]
    assert torch.equal(student.stem.weight, expected.stem.weight)  # the whitening stem is frozen after its init


# --- the device ----------------------------------------------------------------------------------------------------

def test_training_on_the_cpu_gives_the_weights_it_gave_before_devices():
    """Reference numbers from the last commit before labkit chose a device (a 2-step run on random images)."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(96) % 10
    data = CifarData(images[:64], labels[:64], images[64:], labels[64:])
    torch.manual_seed(0)
    model = models.create("student_small")
    history = train(model, data, epochs=2, batch_size=32, progress=False)
    assert history["loss"] == pytest.approx([2.3263466358184814, 2.3278472423553467], rel=1e-5)
    total = sum(v.double().abs().sum().item() for v in model.state_dict().values() if v.is_floating_point())
    assert total == pytest.approx(1303.7197024318234, rel=1e-5)
    torch.manual_seed(1)
    teacher = models.create("student_small").eval()
    torch.manual_seed(0)
    student = models.create("student_small")
    history = distill(student, teacher, data, T=2.0, alpha=0.5, epochs=2, teacher_views=2, batch_size=32,
                      progress=False)
    assert history["loss"] == pytest.approx([1.1711817979812622, 1.1740435361862183], rel=1e-5)
    total = sum(v.double().abs().sum().item() for v in student.state_dict().values() if v.is_floating_point())
    assert total == pytest.approx(1293.9155341936005, rel=1e-5)


def test_the_device_follows_the_environment(monkeypatch):
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    assert device() == torch.device("cpu") and SingleProcess().device == torch.device("cpu")
    monkeypatch.setenv("LABKIT_DEVICE", "gpu please")
    with pytest.raises(ValueError, match="not a device name"):
        device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("LABKIT_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CUDA"):
            device()
        monkeypatch.delenv("LABKIT_DEVICE")
        assert device().type in ("cpu", "mps")


def test_an_image_subset_moves_to_a_device_and_still_indexes_alike(small_cifar):
    subset = ImageSubset(small_cifar.train_images, torch.arange(0, 100, 3))
    idx = torch.tensor([5, 1, 7])
    moved = subset.to("cpu")
    assert isinstance(moved, ImageSubset) and torch.equal(moved[idx], subset[idx])


def test_the_evaluation_split_is_named_in_every_column(small_cifar, trained_small, private_cache):
    tune = small_cifar.with_validation(val_per_class=10)
    history = train(models.create("student_small"), tune, epochs=1, **FAST)
    assert "val_acc" in history.columns and "test_acc" not in history.columns
    history = distill(models.create("student_small"), trained_small[0], tune, epochs=1, teacher_views=1, **FAST)
    assert {"val_acc", "val_agreement", "val_kl"} <= set(history.columns)
    assert not any(c.startswith("test_") for c in history.columns)


def test_the_tracked_kl_is_at_kl_T_so_runs_at_different_T_compare(small_cifar, trained_small, private_cache):
    teacher = trained_small[0]
    student = models.create("student_small")
    history = distill(student, teacher, small_cifar, T=1.0, alpha=0.5, epochs=1, teacher_views=1, kl_T=4.0, **FAST)
    logits = predict_logits(student, small_cifar.test_images)
    teacher_logits = predict_logits(teacher, small_cifar.test_images)
    at_4, at_1 = (kl_at_temperature(logits, teacher_logits, T).item() for T in (4.0, 1.0))
    assert history.last["test_kl"] == pytest.approx(at_4, rel=0.05) and abs(at_4 - at_1) > 0.05 * at_4


@pytest.mark.parametrize("epoch_lines", [True, False])
def test_epoch_rows_are_printed_in_a_terminal_and_kept_in_the_history_in_a_notebook(small_cifar, capsys, monkeypatch,
                                                                                    epoch_lines):
    monkeypatch.setattr("labkit.train.EPOCH_LINES", epoch_lines)
    history = train(models.create("student_small"), small_cifar.subset(train_per_class=20, test_per_class=5),
                    epochs=2, batch_size=100, progress=True)
    printed = [line for line in capsys.readouterr().out.splitlines() if "epoch=" in line]
    assert len(printed) == (2 if epoch_lines else 0) and history["epoch"] == [1, 2]


def test_training_a_trained_teacher_keeps_its_whitening_stem(small_cifar):
    teacher = load_pretrained("teacher", "cpu")
    stem = teacher.stem.weight.detach().clone()
    assert is_whitened(teacher)
    prepare_for_training(teacher, small_cifar, TrainConfig(batch_size=100), None)  # other images than its own
    assert torch.equal(teacher.stem.weight, stem), "a trained teacher's first layer is kept"
    fresh = models.create("teacher")
    assert not is_whitened(fresh) and not is_whitened(models.create("student_small"))
    prepare_for_training(fresh, small_cifar, TrainConfig(batch_size=100), None)
    assert is_whitened(fresh) and not torch.equal(fresh.stem.weight, stem), "a fresh one is set from these images"
