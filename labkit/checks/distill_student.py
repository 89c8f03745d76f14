"""Checks for the exercises of 05_distill_student."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from labkit.distillation import distillation_loss
from labkit.loader import Batch

from labkit.checks._base import AnswerMissing, CheckFailed, _passed, _tensor, _compare


def check_distillation_step(my_step: Callable) -> None:
    """Section 1 of 05_distill_student: one training step, ``my_step(student, teacher, images, labels, optimizer,
    T, alpha)``: the teacher's logits without gradients, the student's, :func:`labkit.distillation_loss`, backward,
    an optimizer step; it returns the loss as a number. Two steps are compared with a reference on a tiny model."""
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    T, alpha = 2.0, 0.7

    def nets() -> tuple[nn.Module, nn.Module]:
        with torch.random.fork_rng(devices=[]):  # the learner's random state is left as it was
            torch.manual_seed(0)
            return nn.Linear(8, 3), nn.Linear(8, 3)

    def run(step: Callable) -> tuple[list[float], list[torch.Tensor], list[torch.Tensor]]:
        student, teacher = nets()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
        losses = [step(student, teacher, images, labels, optimizer, T, alpha) for _ in range(2)]
        return losses, [p.detach().clone() for p in student.parameters()], [p.detach() for p in teacher.parameters()]

    def reference(student, teacher, x, y, optimizer, T, alpha, *, zero=True, t=None, a=None):
        with torch.no_grad():
            teacher_logits = teacher(x)
        loss = distillation_loss(student(x), teacher_logits, y, T=T if t is None else t, alpha=alpha if a is None else a)
        if zero:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def attempt(step: Callable) -> tuple[list[float], list[torch.Tensor], list[torch.Tensor]]:
        try:
            return run(step)
        except CheckFailed:
            raise
        except Exception as err:  # any bug in the learner's code is reported, not re-raised
            if "does not require grad" in str(err):
                raise CheckFailed("the loss has no gradient to follow: are student and teacher logits swapped? "
                                  "distillation_loss(student_logits, teacher_logits, labels, ...) detaches its "
                                  "second argument") from err
            raise CheckFailed(f"`my_step` raised {type(err).__name__}: {err}") from err

    if not callable(my_step):
        raise CheckFailed(f"`my_step` should be a function, got {type(my_step).__name__}")
    losses, weights, teacher_weights = attempt(my_step)
    if any(v is None for v in losses):
        raise AnswerMissing("the step returned None: `return loss.item()` at the end")
    if any(not torch.equal(a, b) for a, b in zip(teacher_weights, nets()[1].parameters())):
        raise CheckFailed("the teacher's weights changed: only the student learns (the optimizer holds the "
                          "student's parameters; compute the teacher's logits under torch.no_grad())")
    expected_losses, expected, _ = run(reference)
    if all(torch.allclose(w, e, atol=1e-6) for w, e in zip(weights, expected)):
        if not torch.allclose(_tensor(losses, "the returned losses"), torch.tensor(expected_losses, dtype=torch.float64),
                              atol=1e-6):
            raise CheckFailed("the weights are right, the returned value is not: `return loss.item()`, this step's loss")
        _passed(f"two steps, losses {expected_losses[0]:.4f} then {expected_losses[1]:.4f}, weights as expected")
        return
    mistakes = {
        "the gradients pile up from step to step: call optimizer.zero_grad() before loss.backward()":
            dict(zero=False),
        "the temperature is missing: pass T=T to distillation_loss": dict(t=1.0),
        "alpha weights the teacher's soft term: pass alpha=alpha, not 1 - alpha": dict(a=1 - alpha),
    }
    for hint, wrong in mistakes.items():
        _, value, _ = run(lambda *args, wrong=wrong: reference(*args, **wrong))
        if all(torch.allclose(w, v, atol=1e-6) for w, v in zip(weights, value)):
            raise CheckFailed(hint)
    if all(torch.equal(w, v) for w, v in zip(weights, nets()[0].parameters())):
        raise CheckFailed("the student did not change: call loss.backward() and optimizer.step()")
    raise CheckFailed("after two steps the student's weights differ from the expected ones: compute the teacher's "
                      "logits, the student's, distillation_loss(student_logits, teacher_logits, labels, T=T, "
                      "alpha=alpha), then zero_grad, backward and step")



def check_train_epoch(my_train_epoch: Callable) -> None:
    """Section 1 of 05_distill_student: one epoch, ``my_train_epoch(student, teacher, batches, optimizer, T,
    alpha)``: the student in training mode, the learner's ``distillation_step`` on every batch of ``batches``
    (labkit.loader.Batch items), the mean of the steps' losses returned. Compared with a reference on a tiny model
    with BatchNorm."""
    gen = torch.Generator().manual_seed(1)
    batches = [Batch(torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen), torch.arange(8), 0)
               for _ in range(3)]
    T, alpha = 2.0, 0.7

    def nets() -> tuple[nn.Module, nn.Module]:
        with torch.random.fork_rng(devices=[]):  # the learner's random state is left as it was
            torch.manual_seed(0)
            student = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
            teacher = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
        return student.eval(), teacher.eval()  # a learner's epoch must switch the student to training itself

    def reference_step(student, teacher, x, y, optimizer, T, alpha):
        with torch.no_grad():
            teacher_logits = teacher(x)
        loss = distillation_loss(student(x), teacher_logits, y, T=T, alpha=alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def run(epoch: Callable, train: bool = True, first_only: bool = False):
        student, teacher = nets()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.3)
        if epoch is not None:
            out = epoch(student, teacher, batches, optimizer, T, alpha)
            return out, student.state_dict(), teacher.state_dict()
        student.train(train)
        losses = [reference_step(student, teacher, b.images, b.labels, optimizer, T, alpha)
                  for b in batches[:1 if first_only else None]]
        return losses, student.state_dict(), teacher.state_dict()

    def same(a: dict, b: dict) -> bool:
        return all(torch.allclose(a[k].double(), b[k].double(), atol=1e-6) for k in a)

    if not callable(my_train_epoch):
        raise CheckFailed(f"`train_epoch` should be a function, got {type(my_train_epoch).__name__}")
    try:
        mean_loss, weights, teacher_state = run(my_train_epoch)
    except Exception as err:  # any bug in the learner's code is reported, not re-raised
        raise CheckFailed(f"`train_epoch` raised {type(err).__name__}: {err}") from err
    losses, expected, expected_teacher = run(None)
    if mean_loss is None and same(weights, nets()[0].state_dict()):
        raise AnswerMissing("`train_epoch` returned None and trained nothing: write its body (student.train(), your "
                          "distillation_step on every batch) and return the mean of the steps' losses")
    if not same(teacher_state, expected_teacher):
        raise CheckFailed("the teacher's BatchNorm statistics changed: leave the teacher in eval mode (only the "
                          "student trains; `student.train()`, not `teacher.train()`)")
    if not same(weights, expected):
        if same(weights, run(None, train=False)[1]):
            raise CheckFailed("the student trained in eval mode: call student.train() before the batches "
                              "(BatchNorm then normalises with each batch's statistics and updates its running ones)")
        if same(weights, run(None, first_only=True)[1]):
            raise CheckFailed("only the first batch was used: the `return` sits inside the loop over batches")
        raise CheckFailed("after one epoch the student's weights differ from the expected ones: for every batch call "
                          "distillation_step(student, teacher, batch.images, batch.labels, optimizer, T, alpha)")
    if mean_loss is None:
        raise CheckFailed("`train_epoch` returned None: return the mean of the steps' losses")
    hints = {"that is the sum of the losses: divide by the number of batches": sum(losses),
             "that is the last batch's loss: return the mean over all batches": losses[-1],
             "that is the first batch's loss: return the mean over all batches": losses[0]}
    _compare(mean_loss, sum(losses) / len(losses), "the returned loss", hints)
    _passed(f"one epoch of {len(batches)} batches, student in training mode, teacher untouched, mean loss "
            f"{sum(losses) / len(losses):.4f}")


def check_unweighted_kl(train_kl: Sequence[float], history: dict, T: float, alpha: float) -> None:
    """Exercise 3 of 06_tuning_temperature_and_alpha: the unweighted KL(teacher || student) of a run, from its
    ``kl_part``."""
    kl_part = torch.tensor(history["kl_part"], dtype=torch.float64)
    _compare(train_kl, kl_part / (alpha * T**2), "train_kl", {
        "you divided by alpha only: the soft term is alpha * T**2 * KL, so divide by T**2 too": kl_part / alpha,
        "you divided by T**2 only: the soft term is weighted by alpha as well": kl_part / T**2,
        "you multiplied by the weights: divide kl_part by alpha * T**2": kl_part * alpha * T**2,
        "that is kl_part itself, still weighted: divide by alpha * T**2": kl_part,
    })
    _passed(f"KL(teacher || student) at T = {T:g}, epoch by epoch: " + ", ".join(f"{v:.4f}" for v in train_kl))


def check_agreement_vs_accuracy(agreements: Sequence[float], accuracies: Sequence[float], runs: list[dict]) -> None:
    """Exercise 3 of 05_distill_student: final validation agreement and accuracy of every run, in run order."""
    for name, answer, key in (("agreements", agreements, "val_agreement"), ("accuracies", accuracies, "val_acc")):
        history = torch.tensor([r["history"][key] for r in runs], dtype=torch.float64)
        _compare(answer, history[:, -1], name, {
            "these are the first epoch's values: use the final epoch (`[-1]`), as every number in this notebook":
                history[:, 0],
            "in percent: use fractions between 0 and 1": 100 * history[:, -1],
        })
    _passed(f"{len(runs)} runs: agreement and accuracy of the final epoch")
