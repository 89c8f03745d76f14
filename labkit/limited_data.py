"""The decision matrix's "limited data" rule, measured: transfer learning against distillation when the task has
few labels (introduced in 09_compress_and_deploy).

The rule: with little labelled data prefer transfer learning, since "distillation might overfit to the teacher's
errors" (a teacher trained on the same few labels is itself a weak model). The experiment:

* **Task.** CIFAR-10 classes 5-9 (dog, frog, horse, ship, truck), renumbered 0-4 (:func:`class_subset`). A fixed
  validation split of those classes is held out first; then ``fraction`` (2%) of the remaining training images
  keep their labels (stratified, seeded); the other images of those classes are unlabelled. The test split is the
  5,000 test images of classes 5-9, used once per final model.
* **Arms** (:data:`LIMITED_ARMS`): *scratch* (the student trained on the few labels); *transfer learning* (a
  student pretrained on classes 0-4 with all their labels, its body kept and its head replaced by a new 5-way one,
  :func:`reuse_body`, then fine-tuned on the few labels); *distilled* (a teacher trained on the same few labels,
  distilled into a fresh student, on the labelled images only or with the unlabelled images as a transfer set);
  *both* (the pretrained student distilled from that teacher, on either set).
* **What is equal.** Every arm of a seed runs through one :class:`labkit.protocol.Protocol`: the same split, the
  same optimiser steps of the same batch size (so the same images seen, whichever set), the same schedule and
  learning rate, the same teacher, and the same initial weights where the design says so: *scratch* and
  *distilled* start from the same fresh student; *transfer learning* and *both* from the same pretrained body under
  the same new head, which is the fresh student's head. The labelled set is repeated ``repeat`` times per epoch
  (:func:`labkit.transfer.labelled_part`) so that epochs are not absurdly short.
* **Seeds.** Each seed replicates the whole pipeline: its own pretraining on classes 0-4 and its own few-label
  teacher, then the arms. A pretraining or teacher shared by the seeds would be cheaper, but every paired interval
  would then hold for one draw of them only; here the intervals include their variation.

:func:`limited_data_rule` runs it and reports paired differences (:func:`labkit.stats.paired_gains`);
:class:`LimitedDataBudget` states the budget and estimates its CPU time.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import torch

from labkit import models
from labkit.data import CifarData, ImageSubset, training_set_digest
from labkit.evaluate import accuracy, mistake_agreement, predict_logits
from labkit.models import CifarNet
from labkit.protocol import REPORTED, Budget, Protocol, freeze, kept_model
from labkit.settings import pick
from labkit.speed import estimate_seconds
from labkit.stats import describe_gain, paired_gains, summarize
from labkit.teacher import fingerprint
from labkit.train import train
from labkit.transfer import count_unlabelled, labelled_part, transfer_set

SOURCE_CLASSES = (0, 1, 2, 3, 4)  # airplane, automobile, bird, cat, deer: the pretraining task
TARGET_CLASSES = (5, 6, 7, 8, 9)  # dog, frog, horse, ship, truck: the task with few labels

# name -> (training set, starts from the pretrained body, distilled)
_ARMS = {"scratch": ("labelled", False, False),
         "transfer learning": ("labelled", True, False),
         "distilled, labelled only": ("labelled", False, True),
         "distilled, transfer set": ("transfer", False, True),
         "both, labelled only": ("labelled", True, True),
         "both, transfer set": ("transfer", True, True)}
LIMITED_ARMS = tuple(_ARMS)
LIMITED_GAINS = (("transfer learning", "scratch"), ("distilled, labelled only", "scratch"),
                 ("distilled, transfer set", "scratch"), ("transfer learning", "distilled, transfer set"),
                 ("transfer learning", "distilled, labelled only"), ("both, transfer set", "transfer learning"),
                 ("both, labelled only", "transfer learning"))
# Does distillation copy the teacher's errors? On the test images the teacher gets wrong, the share where a
# student makes the teacher's very mistake, against students that never saw the teacher.
MISTAKE_GAINS = (("distilled, transfer set", "transfer learning"), ("distilled, transfer set", "scratch"),
                 ("distilled, labelled only", "scratch"))


class LimitedDataError(ValueError):
    """A limited-data experiment that cannot be set up as asked; the message says what to change."""


@dataclass(frozen=True)
class LimitedDataBudget:
    """What every arm of :func:`limited_data_rule` gets (09_compress_and_deploy).

    ``student`` and ``teacher`` are :func:`labkit.models.create` names. ``fraction`` of the target classes'
    training images keep their labels, after ``val_per_class`` per class are held out. Every student run takes the
    optimiser steps of ``epochs`` passes over the labelled set repeated ``repeat`` times, in batches of
    ``batch_size``: the transfer-set arms take the same steps over their larger set. The teacher trains
    ``teacher_epochs`` passes over the same repeated labelled set; the pretrained student ``pretrain_epochs`` over
    all training images of the source classes (minus their own validation split). ``data_seed`` fixes the splits,
    the labelled images, the augmented views and, for every seed, nothing else: each seed draws its own initial
    weights and batch order. ``train_per_class`` / ``test_per_class`` shrink the data first (quick mode).
    """

    student: str = "student_small"
    teacher: str = "teacher"
    seeds: tuple[int, ...] = (0, 1, 2)
    fraction: float = 0.02
    val_per_class: int = 100
    repeat: int = 10
    epochs: float = 5
    teacher_epochs: float = 5
    pretrain_epochs: float = 4
    batch_size: int = 256
    data_seed: int = 0
    train_per_class: int | None = None
    test_per_class: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if len(self.seeds) < 2:
            raise LimitedDataError(f"paired intervals need at least 2 seeds, got {self.seeds}")
        if not 0 < self.fraction < 1:
            raise LimitedDataError(f"fraction must lie in (0, 1), got {self.fraction}")
        if min(self.epochs, self.teacher_epochs, self.pretrain_epochs) <= 0 or self.repeat < 1 or \
                self.batch_size < 1 or self.val_per_class < 1:
            raise LimitedDataError(f"epochs, repeat, batch_size and val_per_class must be positive: {self}")

    def estimate(self, train_per_class: int = 5000, test_per_class: int = 1000) -> dict:
        """CPU seconds of each part on 2 quiet cores (:func:`labkit.speed.estimate_seconds`) for CIFAR-10's
        per-class sizes, and ``minutes`` in all: the arithmetic behind the budget, before running it."""
        train_per_class = self.train_per_class or train_per_class
        test_per_class = self.test_per_class or test_per_class
        classes = len(TARGET_CLASSES)
        kept = train_per_class - self.val_per_class
        labelled = max(1, round(self.fraction * kept)) * classes
        per_epoch = labelled * self.repeat
        seen = (per_epoch // self.batch_size) * self.batch_size * self.epochs
        transfer_views = math.ceil(seen / (kept * classes))
        teacher_inference = (self.val_per_class + test_per_class) * classes + \
            per_epoch * math.ceil(self.epochs) + kept * classes * transfer_views
        per_seed = {"pretrain": estimate_seconds(self.student, train=kept * len(SOURCE_CLASSES) * self.pretrain_epochs),
                    "teacher": estimate_seconds(self.teacher, train=per_epoch * self.teacher_epochs),
                    "teacher logits": estimate_seconds(self.teacher, infer=teacher_inference),
                    "students": estimate_seconds(self.student, train=seen * len(LIMITED_ARMS))}
        seconds = {k: round(v * len(self.seeds)) for k, v in per_seed.items()}
        return {"seconds": seconds, "images_seen_per_run": int(seen), "labelled_images": labelled,
                "minutes": round(sum(seconds.values()) / 60, 1)}


def limited_data_budget(seeds: Sequence[int] = (0, 1, 2)) -> LimitedDataBudget:
    """The budget of 09_compress_and_deploy's limited-data rule (about 17 minutes on 2 quiet CPU cores, see
    :meth:`LimitedDataBudget.estimate`); quick mode: a tiny subset, a fifth of the labels, few steps."""
    if pick(False, True):
        return LimitedDataBudget(seeds=tuple(seeds), fraction=0.2, val_per_class=5, repeat=2, epochs=2,
                                 teacher_epochs=2, pretrain_epochs=1, batch_size=20, train_per_class=60,
                                 test_per_class=20)
    return LimitedDataBudget(seeds=tuple(seeds))


def class_subset(data: CifarData, classes: Sequence[int]) -> CifarData:
    """Only the images of ``classes`` (indices into ``data.classes``), relabelled 0, 1, ... in the order given.

    Every split (training, validation if any, test) is filtered; the training images stay an
    :class:`~labkit.data.ImageSubset` of the original tensor (nothing is copied). ``classes`` of the result are
    the kept names, so a model built for it (:func:`labkit.models.create` with ``num_classes``) has one output per
    kept class.
    """
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < len(data.classes) for c in classes):
        raise LimitedDataError(f"classes must be distinct indices into the {len(data.classes)} classes, got {classes}")
    if count_unlabelled(data):
        raise LimitedDataError("take the classes before removing labels (labkit.transfer.transfer_set): an "
                               "unlabelled image has no class to keep or drop")
    new_label = torch.full((len(data.classes),), -1, dtype=torch.long)
    new_label[classes] = torch.arange(len(classes))

    def keep(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = new_label[labels] >= 0
        return mask, new_label[labels[mask]]

    train_mask, train_labels = keep(data.train_labels)
    test_mask, test_labels = keep(data.test_labels)
    out = replace(data, train_images=ImageSubset(data.train_images, train_mask), train_labels=train_labels,
                  test_images=data.test_images[test_mask], test_labels=test_labels,
                  classes=tuple(data.classes[c] for c in classes))
    if data.val_labels is not None:
        val_mask, val_labels = keep(data.val_labels)
        out = replace(out, val_images=data.val_images[val_mask], val_labels=val_labels)
    return out


def reuse_body(pretrained: CifarNet, fresh: CifarNet) -> CifarNet:
    """Transfer learning's starting point: a copy of ``fresh`` with every weight and BatchNorm statistic taken
    from ``pretrained`` except the head, which stays ``fresh``'s (new, with ``fresh``'s number of classes).
    Neither model is changed."""
    mine, theirs = fresh.state_dict(), pretrained.state_dict()
    body = [k for k in mine if not k.startswith("head.")]
    differ = [k for k in body if k not in theirs or theirs[k].shape != mine[k].shape]
    if differ:
        raise LimitedDataError(f"the pretrained model's body does not fit the new one ({', '.join(differ[:3])}): "
                               "pretrain the same architecture")
    model = CifarNet(**fresh.config)
    model.load_state_dict({**mine, **{k: theirs[k] for k in body}})
    model.name = getattr(fresh, "name", "cifarnet")
    return model


def _fresh(name: str, num_classes: int, seed: int) -> CifarNet:
    # The protocol draws a student's initial weights the same way (labkit.protocol.train_student).
    torch.manual_seed(seed)
    return models.create(name, num_classes=num_classes)


def limited_data_task(data: CifarData, budget: LimitedDataBudget) -> dict:
    """The datasets of :func:`limited_data_rule`: ``source`` (classes 0-4, all labels, with a validation split),
    ``labelled`` (the few labelled images of classes 5-9, repeated, with the target's validation split) and
    ``transfer`` (every training image of classes 5-9, the unlabelled ones marked so), plus their sizes."""
    if budget.train_per_class is not None or budget.test_per_class is not None:
        data = data.subset(budget.train_per_class, budget.test_per_class, seed=budget.data_seed)
    source = class_subset(data, SOURCE_CLASSES).with_validation(budget.val_per_class, seed=budget.data_seed)
    target = class_subset(data, TARGET_CLASSES).with_validation(budget.val_per_class, seed=budget.data_seed)
    per_class = max(1, round(budget.fraction * len(target.train_labels) / len(TARGET_CLASSES)))
    transfer = transfer_set(target, per_class, seed=budget.data_seed)
    labelled = labelled_part(transfer, budget.repeat)
    if len(labelled.train_labels) < budget.batch_size:
        raise LimitedDataError(f"{len(labelled.train_labels)} labelled images per epoch make no batch of "
                               f"{budget.batch_size}: raise repeat or lower batch_size")
    return {"source": source, "labelled": labelled, "transfer": transfer, "labelled_per_class": per_class,
            "labelled_images": per_class * len(TARGET_CLASSES), "unlabelled_images": count_unlabelled(transfer)}


def _train_fresh(name: str, data: CifarData, epochs: float, seed: int, batch_size: int,
                 progress: bool) -> tuple[CifarNet, dict]:
    """``name`` from the seed's fresh weights, trained on ``data`` with labels only, and its record."""
    model = _fresh(name, len(data.classes), seed)
    started = time.perf_counter()
    history = train(model, data, epochs=epochs, seed=seed, batch_size=batch_size, progress=progress)
    return model.eval(), {"seed": seed, "val_acc": history.last["val_acc"],
                          "seconds": round(time.perf_counter() - started, 1)}


def _pretrain(source: CifarData, budget: LimitedDataBudget, seed: int, store, progress: bool,
              say: Callable[[str], None]) -> tuple[CifarNet, dict]:
    """The student trained on the source classes with all their labels, from the seed's fresh weights (the scratch
    arm's initial draw: same architecture, same seed), and its record."""
    def make():
        say(f"pretraining {budget.student} on classes {SOURCE_CLASSES}: seed {seed}")
        return _train_fresh(budget.student, source, budget.pretrain_epochs, seed, budget.batch_size, progress)

    what = {"kind": "pretrained student", "student": budget.student, "seed": seed,
            "epochs": budget.pretrain_epochs, "batch_size": budget.batch_size, "data": source.source,
            "training_set": training_set_digest(source), "classes": source.classes}
    return kept_model(store, what, make, lambda: _fresh(budget.student, len(source.classes), seed), say=say)


def _few_label_teacher(labelled: CifarData, budget: LimitedDataBudget, seed: int, store, progress: bool,
                       say: Callable[[str], None]) -> tuple[CifarNet, dict]:
    """A teacher trained from scratch on the labelled images alone (the course recipe, labels only)."""
    def make():
        say(f"teacher ({budget.teacher}) on the {len(labelled.train_labels) // budget.repeat} labelled images: "
            f"seed {seed}")
        return _train_fresh(budget.teacher, labelled, budget.teacher_epochs, seed, budget.batch_size, progress)

    what = {"kind": "few-label teacher", "teacher": budget.teacher, "seed": seed, "epochs": budget.teacher_epochs,
            "batch_size": budget.batch_size, "data": labelled.source, "training_set": training_set_digest(labelled)}
    return kept_model(store, what, make, lambda: _fresh(budget.teacher, len(labelled.classes), seed), say=say)


def limited_data_rule(data: CifarData, *, T: float, alpha: float, budget: LimitedDataBudget | None = None,
                      arms: Sequence[str] = LIMITED_ARMS, store=None, progress: bool = False,
                      log: Callable[[str], None] | None = print) -> dict:
    """Transfer learning against distillation on CIFAR-10 classes 5-9 with few labels (09_compress_and_deploy).

    ``data`` is all of CIFAR-10 (the module docstring describes the task and the arms); ``budget`` defaults to
    :func:`limited_data_budget`; distilled arms use ``T`` and ``alpha`` (labels-only arms: ``alpha = 0``, the same
    loop). With ``store`` (a folder) the pretrained students, the teachers and every finished run are kept there,
    and a later call with the same settings reads them back. Returns the settings (with the budget's images seen),
    per seed the pretrained student's and the teacher's accuracy, per arm the summaries over seeds of the final
    models' test accuracy (and agreement, KL and ECE against that seed's teacher), every run, the paired
    differences of :data:`LIMITED_GAINS` (those whose arms ran) and the rule's verdict (:func:`verdict`). Each run
    also records ``teacher_mistakes`` (:func:`labkit.evaluate.mistake_agreement`: on the test images the seed's
    teacher gets wrong, how often the student repeats its mistake), summarised per arm as ``same_mistake`` and
    compared in ``mistake_gains`` (:data:`MISTAKE_GAINS`, paired over the seeds).
    """
    unknown = [a for a in arms if a not in _ARMS]
    if unknown or not arms:
        raise LimitedDataError(f"no arm named {unknown}; the arms are {LIMITED_ARMS}")
    budget = budget or limited_data_budget()
    say = log or (lambda message: None)
    started = time.perf_counter()
    task = limited_data_task(data, budget)
    labelled, transfer = task["labelled"], task["transfer"]
    # Equal optimiser steps on either set (the training loop takes ceil(batches per epoch x epochs) steps)
    steps = math.ceil(len(labelled.train_labels) // budget.batch_size * budget.epochs)
    batches = len(transfer.train_labels) // budget.batch_size
    transfer_epochs = steps / batches
    if math.ceil(batches * transfer_epochs) > steps:  # a rounding error above an integer would add one step
        transfer_epochs = math.nextafter(transfer_epochs, 0)
    protocol_budget = Budget(student=budget.student, epochs=budget.epochs, seeds=budget.seeds,
                             teacher_views=math.ceil(budget.epochs), batch_size=budget.batch_size,
                             val_per_class=budget.val_per_class, data_seed=budget.data_seed, batch_order_per_seed=True)
    pretrained_runs, teacher_runs, runs = [], [], {name: [] for name in arms}
    for seed in budget.seeds:
        fresh = _fresh(budget.student, len(TARGET_CLASSES), seed)
        pretrained, pretrain_record = _pretrain(task["source"], budget, seed, store, progress, say)
        teacher, teacher_record = _few_label_teacher(labelled, budget, seed, store, progress, say)
        on_labelled = Protocol(protocol_budget, freeze(teacher), labelled, progress=progress, log=log, store=store)
        sets = {"labelled": on_labelled,
                "transfer": on_labelled.with_training(transfer, epochs=transfer_epochs,
                                                      teacher_views=math.ceil(transfer_epochs))}
        teacher_record["test_acc"] = accuracy(on_labelled.teacher_test_logits(), on_labelled.data.test_labels)
        pretrained_runs.append({**pretrain_record, "fingerprint": fingerprint(pretrained)[:16]})
        teacher_runs.append(teacher_record)
        for name in arms:
            where, reuses, distilled = _ARMS[name]
            options = {"start": reuse_body(pretrained, fresh)} if reuses else {}
            say(f"{name}: seed {seed}")
            model, record = sets[where].train(seed, T=T, alpha=alpha if distilled else 0.0, **options)
            record.update(arm=name, training_set=where, pretrained=reuses, **on_labelled.test(model, T),
                          teacher_mistakes=mistake_agreement(predict_logits(model, labelled.test_images),
                                                             on_labelled.teacher_test_logits(), labelled.test_labels))
            say(f"    {name}, seed {seed}: test accuracy {record['test_acc']:.4f} ({record['seconds']:.0f} s)")
            runs[name].append(record)
    test = {name: [r["test_acc"] for r in rs] for name, rs in runs.items()}
    gains = paired_gains(test, [pair for pair in LIMITED_GAINS if set(pair) <= set(arms)])
    same = {name: [r["teacher_mistakes"]["same_mistake"] for r in rs] for name, rs in runs.items()}
    mistake_gains = paired_gains(same, [pair for pair in MISTAKE_GAINS if set(pair) <= set(arms)])
    settings = {**asdict(budget), "seeds": list(budget.seeds), "T": T, "alpha": alpha, "arms": list(arms),
                "source_classes": list(task["source"].classes), "target_classes": list(labelled.classes),
                "labelled_per_class": task["labelled_per_class"], "labelled_images": task["labelled_images"],
                "unlabelled_images": task["unlabelled_images"],
                "source_train_images": len(task["source"].train_labels), "val_images": len(labelled.val_labels),
                "test_images": len(labelled.test_labels), "steps_per_run": steps,
                "images_seen_per_run": steps * budget.batch_size, "transfer_epochs": transfer_epochs,
                "data": data.source}
    results = {"settings": settings, "pretrained": pretrained_runs, "teachers": teacher_runs,
               "arms": {name: {"training_set": rs[0]["training_set"], "pretrained": rs[0]["pretrained"],
                               "alpha": rs[0]["alpha"], **{k: summarize([r[k] for r in rs]) for k in REPORTED},
                               "same_mistake": summarize(same[name])}
                        for name, rs in runs.items()},
               "runs": runs, "gains": gains, "mistake_gains": mistake_gains,
               "seconds": round(time.perf_counter() - started, 1)}
    results["verdict"] = verdict(results)
    return results


def verdict(results: dict) -> str:
    """The rule's verdict from :func:`limited_data_rule`'s numbers: transfer learning against the better (by mean)
    of the distilled students, as a paired difference with its interval; "not measured" without those arms."""
    arms = results["arms"]
    distilled = [a for a in ("distilled, transfer set", "distilled, labelled only") if a in arms]
    if "transfer learning" not in arms or not distilled:
        return "not measured: the rule needs the transfer-learning arm and a distilled arm"
    best = max(distilled, key=lambda a: arms[a]["test_acc"]["mean"])
    gain = results["gains"][f"transfer learning - {best}"]
    if not gain["shown"]:
        found = "neither is shown better"
    else:
        found = "transfer learning is better, as the rule says" if gain["mean"] > 0 else \
            "distillation is better, against the rule"
    return (f"With {results['settings']['labelled_images']} labels, transfer learning - {best}: "
            f"{describe_gain(gain)}; {found}.")
