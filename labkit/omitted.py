"""Hinton et al.'s omitted-class experiment, redone on CIFAR-10 (introduced in 10_omitted_class).

A student is distilled on a transfer set from which every image of one class was removed. It never sees that
class, yet the teacher's soft targets on the *other* images mention it (a truck's image gives a little
probability to "automobile"...). Raising the student's bias for the missing class by one number, chosen on
validation images, shows how much it learned about a class it was never shown.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from torch import nn

from labkit.data import CifarData
from labkit.evaluate import accuracy, confusion_matrix, predict_logits
from labkit.settings import pick
from labkit.protocol import Budget, Protocol, prepare
from labkit.stats import summarize

BIAS_GRID = torch.linspace(0.0, 15.0, 151)
TEACHERS = ("teacher", "teacher_2")  # label smoothing 0.2, and none: the choice is made on validation
CANDIDATES = ((1.0, 0.5), (4.0, 0.9), (10.0, 0.9))  # (T, alpha)


def omitted_budget() -> dict:
    """The :class:`labkit.protocol.Budget` fields of 10_omitted_class and of ``benchmarks/omitted_choice.py``:
    ``student_small``, 4 epochs, 5 seeds varying the initial weights and the batch order (quick mode: a few hundred
    images, two seeds, one epoch)."""
    return dict(student="student_small", epochs=pick(4, 1), seeds=pick((0, 1, 2, 3, 4), (0, 1)), teacher_views=4,
                batch_size=pick(512, 100), val_per_class=pick(500, 10), train_per_class=pick(None, 60),
                test_per_class=pick(None, 30), data_seed=0, batch_order_per_seed=True)


def without_class(data: CifarData, omitted: int) -> CifarData:
    """``data`` with every training image of class ``omitted`` removed (the test split is kept whole)."""
    if not 0 <= omitted < len(data.classes):
        raise ValueError(f"omitted must be a class index in [0, {len(data.classes)}), got {omitted}")
    return data.keep_train(data.train_labels != omitted)


def with_bias(logits: torch.Tensor, omitted: int, bias: float) -> torch.Tensor:
    """``logits`` with ``bias`` added to the omitted class's logit (a change of that class's output bias)."""
    shifted = logits.clone()
    shifted[:, omitted] += bias
    return shifted


def choose_bias(logits: torch.Tensor, labels: torch.Tensor, omitted: int,
                grid: torch.Tensor = BIAS_GRID) -> float:
    """The bias from ``grid`` that maximises overall accuracy on ``(logits, labels)`` (validation data);
    the smallest such bias when several tie."""
    scores = torch.stack([(with_bias(logits, omitted, float(b)).argmax(1) == labels).float().mean() for b in grid])
    return float(grid[int(torch.nonzero(scores == scores.max())[0])])


def omitted_scores(logits: torch.Tensor, labels: torch.Tensor, omitted: int, bias: float) -> dict:
    """Accuracy overall and on the images of class ``omitted``, before and after adding ``bias`` to its logit,
    where those images go (their row of the confusion matrix, before and after), and the precision of the class
    after the bias: the share of the images predicted as ``omitted`` that are (0 when none is)."""
    fixed = with_bias(logits, omitted, bias)
    is_omitted = labels == omitted
    called = fixed.argmax(1) == omitted
    return {"acc": accuracy(logits, labels), "acc_biased": accuracy(fixed, labels),
            "omitted_precision_biased": (called & is_omitted).sum().item() / max(called.sum().item(), 1),
            "omitted_acc": accuracy(logits[is_omitted], labels[is_omitted]),
            "omitted_acc_biased": accuracy(fixed[is_omitted], labels[is_omitted]),
            "omitted_row": confusion_matrix(logits, labels)[omitted].tolist(),
            "omitted_row_biased": confusion_matrix(fixed, labels)[omitted].tolist()}


def _omitted_protocol(teacher: nn.Module, data: CifarData, omitted: int, budget: dict, *, progress: bool,
                      log: Callable[[str], None] | None, store: str | None) -> Protocol:
    """The protocol of both functions below: validation held out first, then the omitted class removed."""
    protocol = prepare(teacher, data, Budget(**budget), progress=progress, log=log, store=store)
    return protocol.with_training(without_class(protocol.data, omitted))


def _run_on_validation(protocol: Protocol, seed: int, omitted: int, **options) -> tuple[nn.Module, dict]:
    """One student through ``protocol``; its bias chosen on validation and its ``val_*`` scores with that bias."""
    split = protocol.data
    model, record = protocol.train(seed, **options)
    val_logits = predict_logits(model, split.val_images)
    bias = choose_bias(val_logits, split.val_labels, omitted)
    scores = omitted_scores(val_logits, split.val_labels, omitted, bias)
    record.update(bias=bias, val_omitted_acc=scores["omitted_acc"],
                  val_omitted_acc_biased=scores["omitted_acc_biased"])
    return model, record


def _val_fields(record: dict) -> dict:
    return {k: record[k] for k in ("val_acc", "bias", "val_omitted_acc", "val_omitted_acc_biased")}


def choose_omitted_setting(teachers: dict[str, nn.Module], data: CifarData, *, omitted: int,
                           candidates: Sequence[tuple[float, float]], log: Callable[[str], None] | None = print,
                           store: str | None = None, **budget) -> dict:
    """Which teacher and (T, alpha) to distil from, chosen on validation only (introduced in 10_omitted_class).

    For every teacher of ``teachers`` (by name) and every candidate, one distilled student with the budget's first
    seed on the transfer set of :func:`omitted_class_experiment`, plus one labels-only student for reference; each
    student's bias is chosen on the validation split, and the criterion is the share of validation images of the
    omitted class it recognises with that bias. The test split is not used. Ties go to the earlier candidate.
    """
    if not teachers or not candidates:
        raise ValueError("need at least one teacher and one (T, alpha) candidate")
    seed = Budget(**budget).seeds[0]
    tried = []
    for name, teacher in teachers.items():
        protocol = _omitted_protocol(teacher, data, omitted, budget, progress=False, log=log, store=store)
        for T, alpha in candidates:
            protocol.say(f"{name}, T={T:g}, alpha={alpha:g}: seed {seed}")
            record = _run_on_validation(protocol, seed, omitted, T=float(T), alpha=float(alpha))[1]
            tried.append({"teacher": name, "T": float(T), "alpha": float(alpha), **_val_fields(record)})
            protocol.say(f"    validation: omitted class {tried[-1]['val_omitted_acc_biased']:.1%} with bias "
                         f"{record['bias']:.1f}, overall {record['val_acc']:.1%}")
    # alpha = 0: the teacher plays no part, so the last teacher's protocol serves as well as any
    labels_only = _val_fields(_run_on_validation(protocol, seed, omitted, T=1.0, alpha=0.0)[1])
    best = max(range(len(tried)), key=lambda i: (tried[i]["val_omitted_acc_biased"], -i))
    return {"chosen": {k: tried[best][k] for k in ("teacher", "T", "alpha")}, "candidates": tried,
            "labels_only": labels_only, "settings": protocol.settings(omitted=omitted,
                                                                     omitted_name=data.classes[omitted])}


def omitted_class_experiment(teacher: nn.Module, data: CifarData, *, omitted: int, T: float, alpha: float,
                             progress: bool = False, log: Callable[[str], None] | None = print,
                             store: str | None = None, **budget) -> dict:
    """Distilled vs labels-only students trained without class ``omitted``; bias chosen on validation.

    ``budget`` holds :class:`labkit.protocol.Budget` fields. The validation images (the omitted class included)
    are held out first; the transfer set is the rest minus the omitted class. Both arms train through
    :func:`labkit.train.distill` (labels only = ``alpha`` 0) from the same weights on the same batches. For each
    final student the bias of the omitted class is chosen on validation, then the test set is measured once,
    before and after it. With ``store`` finished runs are kept there and reused.
    """
    started = time.perf_counter()
    protocol = _omitted_protocol(teacher, data, omitted, budget, progress=progress, log=log, store=store)
    split = protocol.data
    arms = {"distilled": alpha, "labels only": 0.0}
    results = {name: [] for name in arms}
    for name, arm_alpha in arms.items():
        for seed in protocol.budget.seeds:
            protocol.say(f"{name}: seed {seed}")
            model, record = _run_on_validation(protocol, seed, omitted, T=T, alpha=arm_alpha)
            scores = omitted_scores(predict_logits(model, split.test_images), split.test_labels, omitted,
                                    record["bias"])
            record.update(test_acc=scores.pop("acc"), test_acc_biased=scores.pop("acc_biased"), **scores)
            protocol.say(f"    omitted class: {record['omitted_acc']:.1%} -> {record['omitted_acc_biased']:.1%} "
                         f"with bias {record['bias']:.1f}; overall {record['test_acc']:.1%} -> "
                         f"{record['test_acc_biased']:.1%}")
            results[name].append(record)
    summary = {name: {k: summarize([r[k] for r in runs]) for k in
                      ("test_acc", "test_acc_biased", "omitted_acc", "omitted_acc_biased", "bias",
                       "val_omitted_acc_biased")}
               for name, runs in results.items()}
    settings = protocol.settings(omitted=omitted, omitted_name=data.classes[omitted], T=T, alpha=alpha,
                                 transfer_images=len(split.train_labels))
    return {"settings": settings, "summary": summary, "runs": results,
            "seconds": round(time.perf_counter() - started, 1)}
