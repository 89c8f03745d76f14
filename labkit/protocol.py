"""What every arm of an experiment shares, fixed in one object (introduced in 05_distill_student).

A comparison of students means something only if the arms differ in the one thing compared. Here that holds by
construction: :func:`prepare` fixes the split (training images minus a validation split, and the test split),
the frozen teacher and the :class:`Budget` (student, epochs, batch size, teacher views, seeds) once, and every
experiment of the course trains and tests each arm through the resulting :class:`Protocol`:

* **No tuning on the test set.** Training runs watch the validation split (``val_*`` columns); the test split
  is used once, at the end, for the final models of the reported arms (:meth:`Protocol.test`).
* **The final epoch, never the best one.** A run's numbers are those of its model after the last epoch.
* **The same start and the same batches.** For one seed every arm starts from the same initial weights
  (``torch.manual_seed(seed)`` right before :func:`labkit.models.create`; their fingerprint is recorded to prove
  it) and sees the same batches of the same augmented views in the same order, under the same schedule.
  Labels-only arms are :func:`labkit.train.distill` with ``alpha = 0``, so the loop, the loss code and the
  schedule are literally the same. The seeds vary the initial weights; ``data_seed`` fixes the augmented views
  and the batch order, which lets the teacher's logits be computed once for every run (:mod:`labkit.teacher`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import time
import types
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from labkit import models
from labkit.atomic import write_text_atomic
from labkit.data import CifarData, pixel_digest, training_set_digest
from labkit.distillation import kl_at_temperature
from labkit.evaluate import accuracy, agreement, expected_calibration_error, predict_logits
from labkit.history import History
from labkit.pretrained import WeightsError, load_weights, save_weights
from labkit.settings import LEGACY_PRECISION, precision
from labkit.stats import summarize
from labkit.teacher import (FrozenTeacher, code_digest, fingerprint, short_identity, teacher_identity,
                            teacher_logits_for_views)
from labkit.train import TrainConfig, distill

# Summarised over seeds for every arm of every experiment.
REPORTED = ("test_acc", "val_acc", "test_agreement", "test_kl", "test_ece")
STORED_RUN_KEY = "labkit_stored_run"  # marks kept_model's format with a checksum of the weights


@dataclass(frozen=True)
class Budget:
    """The budget and split every arm of an experiment shares (introduced in 05_distill_student).

    ``student`` is a :func:`labkit.models.create` name; each run trains it for ``epochs`` in batches of
    ``batch_size`` on ``teacher_views`` cached augmented views (0: online teacher), once per seed in ``seeds``.
    ``val_per_class`` training images per class are held out as validation; ``train_per_class`` /
    ``test_per_class`` shrink the data first (quick mode; None keeps a split whole); ``data_seed`` draws the
    split, the views and the batch order; with ``batch_order_per_seed`` every seed draws its own batch order
    too, and with ``views_per_seed`` its own augmented views (the teacher's logits are then computed, and cached,
    for each seed's views: only the teacher and the split stay fixed).
    """

    student: str = "student_small"
    epochs: float = 4
    seeds: tuple[int, ...] = (0, 1, 2)
    teacher_views: int = 4
    batch_size: int = 512
    val_per_class: int = 500
    train_per_class: int | None = None
    test_per_class: int | None = None
    data_seed: int = 0
    batch_order_per_seed: bool = False
    views_per_seed: bool = False

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds:
            raise ValueError("need at least one seed")
        if not self.epochs > 0 or self.batch_size < 1 or self.val_per_class < 1 or self.teacher_views < 0:
            raise ValueError(f"epochs, batch_size and val_per_class must be positive and teacher_views >= 0: {self}")


def freeze(teacher: nn.Module) -> FrozenTeacher:
    """``teacher`` wrapped in a :class:`labkit.teacher.FrozenTeacher` (unchanged if it is one already)."""
    return teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(teacher)


def train_student(teacher: nn.Module, data: CifarData, *, student: str, seed: int, T: float, alpha: float,
                  lr_scale: float = 1.0, epochs: float, teacher_views: int = 4, batch_size: int = 512,
                  data_seed: int = 0, batch_seed: int | None = None, views_seed: int | None = None,
                  progress: bool = True, start: nn.Module | None = None,
                  method: Callable[..., History] | None = None, **method_options) -> tuple[nn.Module, dict]:
    """One student run through :func:`labkit.train.distill` (or ``method``, a function with its signature, such
    as :func:`labkit.beyond.function_matching`) on ``data``, which holds a validation split
    (:meth:`labkit.data.CifarData.with_validation`). Introduced in 05_distill_student.

    Returns the trained student and a record of the run: its settings, the fingerprint of its initial weights,
    its per-epoch history (``val_acc``, ``val_agreement``, ``val_kl``, plus the unweighted ``train_ce`` and
    ``train_kl``), its final-epoch validation numbers and its wall time. ``seed`` draws the initial weights,
    ``batch_seed`` and ``views_seed`` (default ``data_seed`` for both) the batch order and the augmented views.
    The student has one output per class of ``data.classes``. With ``start`` a copy of that model trains instead
    of fresh weights (09_compress_and_deploy: a pretrained body under a new head,
    :func:`labkit.limited_data.reuse_body`).
    """
    if data.val_images is None:
        raise ValueError("train_student watches a validation split: pass data.with_validation(...)")
    torch.manual_seed(seed)
    model = models.create(student, num_classes=len(data.classes)) if start is None else copy.deepcopy(start).train()
    init = fingerprint(model)[:16]
    method = method or distill
    started = time.perf_counter()
    history = method(model, teacher, data, T=T, alpha=alpha, epochs=epochs, teacher_views=teacher_views,
                     batch_size=batch_size, seed=data_seed if batch_seed is None else batch_seed,
                     views_seed=data_seed if views_seed is None else views_seed, lr=TrainConfig().lr * lr_scale, progress=progress, **method_options)
    history = _unweighted_parts(history, T, alpha)
    last = history.last
    record = {"seed": seed, "precision": history.precision, "batch_seed": data_seed if batch_seed is None else batch_seed,
              "views_seed": data_seed if views_seed is None else views_seed, "method": method.__name__,
              "T": T, "alpha": alpha, "lr_scale": lr_scale,
              "init_fingerprint": init,
              "val_acc": last["val_acc"], "val_agreement": last["val_agreement"], "val_kl": last["val_kl"],
              "seconds": round(time.perf_counter() - started, 1), "history": history.to_dict()}
    return model, record


def _unweighted_parts(history: History, T: float, alpha: float) -> History:
    rows = []
    for row in history.rows:
        row = dict(row)
        if alpha < 1:
            row["train_ce"] = row["ce_part"] / (1 - alpha)  # the unweighted cross-entropy with the labels
        if alpha > 0:
            row["train_kl"] = row["kl_part"] / (alpha * T**2)  # the unweighted KL(teacher || student) at T
        rows.append(row)
    return History(rows, history.precision)


def evaluate_on_test(model: nn.Module, test_images: torch.Tensor, test_labels: torch.Tensor,
                     teacher_test_logits: torch.Tensor, T: float) -> dict:
    """Test accuracy, agreement with the teacher, KL(teacher || student) at ``T`` and ECE of a final model."""
    logits = predict_logits(model, test_images)
    return {"test_acc": accuracy(logits, test_labels), "test_agreement": agreement(logits, teacher_test_logits),
            "test_kl": kl_at_temperature(logits, teacher_test_logits, T).item(),
            "test_ece": expected_calibration_error(logits, test_labels)}


@dataclass
class Protocol:
    """A prepared experiment (introduced in 05_distill_student): every arm trains and is tested through it.

    ``data`` holds the training images minus the validation split, the validation split and the test split;
    ``teacher`` is frozen. Build one with :func:`prepare`.
    """

    budget: Budget
    teacher: FrozenTeacher
    data: CifarData
    progress: bool = False
    log: Callable[[str], None] | None = print
    store: Path | None = None  # finished runs are kept here and reused, so a long experiment can resume
    # id(teacher) -> (teacher, its test logits); holding the teacher keeps its id from being reused
    _test_logits: dict[int, tuple[FrozenTeacher, torch.Tensor]] = field(default_factory=dict, repr=False)

    def say(self, message: str) -> None:
        """Print ``message`` through ``log`` (silent when ``log`` is None)."""
        if self.log is not None:
            self.log(message)

    def settings(self, **extra) -> dict:
        """The budget, the split sizes, the data source and ``extra``: the ``settings`` of a results JSON."""
        budget = asdict(self.budget)
        return {**budget, "seeds": list(budget["seeds"]), **extra, "train_images": len(self.data.train_labels),
                "val_images": len(self.data.val_labels), "test_images": len(self.data.test_labels),
                "data": self.data.source}

    def train(self, seed: int, *, teacher: nn.Module | None = None, **options) -> tuple[nn.Module, dict]:
        """One run of :func:`train_student` at this budget; ``options`` (T, alpha, method, ...) may override
        ``epochs``, ``teacher_views`` and ``batch_size`` where an arm needs to (e.g. an online teacher)."""
        b = self.budget
        options = {"epochs": b.epochs, "teacher_views": b.teacher_views, "batch_size": b.batch_size,
                   "batch_seed": seed if b.batch_order_per_seed else b.data_seed,
                   "views_seed": seed if b.views_per_seed else b.data_seed, **options}
        teacher = self.teacher if teacher is None else freeze(teacher)
        start = options.get("start")
        return kept_model(self.store, self._run_description(seed, teacher, options),
                          lambda: train_student(teacher, self.data, student=b.student, seed=seed,
                                                data_seed=b.data_seed, progress=self.progress, **options),
                          lambda: models.create(b.student, num_classes=len(self.data.classes)) if start is None
                          else copy.deepcopy(start), say=self.say, verify={"pixels": pixel_digest(self.data)})

    def _run_description(self, seed: int, teacher: FrozenTeacher, options: dict) -> dict:
        """Everything that decides a run's result: what its kept copy is named by."""
        described = {k: describe_option(v) for k, v in options.items()}
        return {"budget": asdict(self.budget), "seed": seed, "options": described, "teacher": teacher_identity(teacher),
                "data": self.settings(), "training_set": training_set_digest(self.data),
                "precision": precision(None, options.get("start"))}

    def teacher_test_logits(self, teacher: nn.Module | None = None) -> torch.Tensor:
        """The teacher's logits on the test split (computed once per teacher)."""
        teacher = self.teacher if teacher is None else freeze(teacher)
        if id(teacher) not in self._test_logits:
            logits = teacher_logits_for_views(teacher, [self.data.test_images], progress=self.progress)[0]
            self._test_logits[id(teacher)] = (teacher, logits)
        return self._test_logits[id(teacher)][1]

    def test(self, model: nn.Module, T: float, teacher: nn.Module | None = None) -> dict:
        """:func:`evaluate_on_test` of a final model on the test split: call it once per reported run."""
        return evaluate_on_test(model, self.data.test_images, self.data.test_labels,
                                self.teacher_test_logits(teacher), T)

    def with_training(self, data: CifarData, **budget_changes) -> "Protocol":
        """The same protocol on other training images (``data`` keeps this one's validation and test splits),
        with ``budget_changes`` (e.g. more epochs for a smaller labelled set)."""
        if data.val_images is None:
            raise ValueError("the new training data must keep the validation split")
        return replace(self, data=data, budget=replace(self.budget, **budget_changes), _test_logits=self._test_logits)


def describe_option(value: object) -> object:
    """How a run option enters a stored run's name (introduced in 05_distill_student): a model by what it computes
    (:func:`labkit.teacher.short_identity`); labkit's own functions by their name (labkit's version decides them, and the runs kept in
    benchmarks/kept keep their names); any other function by its name and a digest of its code, defaults and
    captured values, so that two different lambdas, or one edited, are two runs; a ``functools.partial`` by its
    function and arguments; anything else as it is."""
    if isinstance(value, nn.Module):
        return short_identity(value)
    if isinstance(value, functools.partial):
        return {"partial": describe_option(value.func), "args": [describe_option(a) for a in value.args],
                "keywords": {k: describe_option(v) for k, v in sorted(value.keywords.items())}}
    if isinstance(value, types.FunctionType):
        if value.__module__.startswith("labkit") and "<" not in value.__qualname__ and not value.__closure__:
            return value.__name__
        h = hashlib.sha256()
        code_digest(value.__code__, h)
        captured = [cell.cell_contents for cell in value.__closure__ or ()]
        h.update(repr([describe_option(v) for v in (*(value.__defaults__ or ()), *captured)]).encode())
        return f"{value.__qualname__}#{h.hexdigest()[:12]}"
    return getattr(value, "__name__", value)


def kept_model(store: str | Path | None, what: dict, make: Callable[[], tuple[nn.Module, dict]],
               skeleton: Callable[[], nn.Module], say: Callable[[str], None] | None = None,
               verify: dict | None = None) -> tuple[nn.Module, dict]:
    """``make()``'s trained model and JSON-ready record, kept in the folder ``store`` under a hash of ``what``
    (everything that decides the result); a later call with the same ``what`` reads them back into
    ``skeleton()`` instead of training again, so an interrupted experiment continues (05_distill_student).
    Without ``store`` it simply calls ``make()``.

    ``what["precision"]`` (default :func:`labkit.settings.precision`) names the run only when it is not float32,
    so the runs kept before labkit recorded it, all float32, keep their names. ``verify`` is stored beside the
    record and must match on reading back, without naming the run (e.g. the training images' pixel digest, which
    the runs kept before it existed lack)."""
    if store is None:
        return make()
    what = {"precision": precision(), **what}
    if what["precision"] == LEGACY_PRECISION:
        del what["precision"]
    kept = Path(store) / hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]
    if kept.with_suffix(".json").is_file():
        if say is not None:
            say(f"    (reusing the finished run {kept.name})")
        stored = _read_stored_run(kept.with_suffix(".json"))
        if verify is not None and stored.get("verify", verify) != verify:
            raise StoredRunError(f"the stored run {kept.with_suffix('.json')} was made on other data ({stored['verify']}, "
                                 f"now {verify}): delete it and its weights to train it again on this data")
        weights = kept.with_suffix(".safetensors")
        try:
            if STORED_RUN_KEY not in stored:  # kept before stored runs carried a checksum
                return load_weights(skeleton(), weights), stored
            return load_weights(skeleton(), weights, stored["weights_sha256"]), stored["record"]
        except (WeightsError, KeyError) as error:
            raise StoredRunError(f"the stored run {kept.with_suffix('.json')} (weights {weights.name}) cannot be read "
                                 f"back ({type(error).__name__}: {error}): delete it and its weights, and the run is "
                                 "trained again") from None
    model, record = make()
    sha = save_weights(model, kept.with_suffix(".safetensors"), half=False)
    # written last: it marks the run finished, and the checksum catches weights damaged since
    write_text_atomic(kept.with_suffix(".json"), json.dumps({STORED_RUN_KEY: 1, "weights_sha256": sha,
                                                              "record": record, **({"verify": verify} if verify else {})}))
    return model, record


class StoredRunError(ValueError):
    """A stored run (:func:`kept_model`) that cannot be read back; the message names the file and what to do."""


def _read_stored_run(path: Path) -> dict:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StoredRunError(f"the stored run {path} is damaged ({error}): delete it and its .safetensors file, and "
                             "the run is trained again") from None
    if not isinstance(stored, dict):
        raise StoredRunError(f"the stored run {path} holds {type(stored).__name__}, not a run record: delete it and "
                             "its .safetensors file, and the run is trained again")
    return stored


def prepare(teacher: nn.Module, data: CifarData, budget: Budget, *, progress: bool = False,
            log: Callable[[str], None] | None = print, store: str | Path | None = None) -> Protocol:
    """Shrink ``data`` as the budget says, hold out its validation split and freeze the teacher (05_distill_student).

    With ``store`` (a folder) every finished run is kept there and an identical later run is read back instead of
    retrained, so an experiment interrupted at any point continues where it stopped.
    """
    if budget.train_per_class is not None or budget.test_per_class is not None:
        data = data.subset(budget.train_per_class, budget.test_per_class, seed=budget.data_seed)
    data = data.with_validation(budget.val_per_class, seed=budget.data_seed)
    return Protocol(budget, freeze(teacher), data, progress=progress, log=log,
                    store=None if store is None else Path(store))


def choose_on_validation(protocol: Protocol, candidates: Sequence[tuple[float, float]], *,
                         teacher: nn.Module | None = None, **options) -> tuple[int, list[tuple[nn.Module, dict]]]:
    """One run per (T, alpha) candidate with the budget's first seed (``options``: more :meth:`Protocol.train`
    options, e.g. ``targets``); returns the index of the highest final-epoch validation accuracy (ties: the
    earlier candidate) and every run (05_distill_student)."""
    first = protocol.budget.seeds[0]
    tried = []
    for T, alpha in candidates:
        protocol.say(f"candidate: seed {first}, T={T:g}, alpha={alpha:g}")
        tried.append(protocol.train(first, teacher=teacher, T=float(T), alpha=float(alpha), **options))
        protocol.say(f"    final-epoch validation accuracy {tried[-1][1]['val_acc']:.4f}")
    best = max(range(len(tried)), key=lambda i: (tried[i][1]["val_acc"], -i))
    return best, tried


def run_arms(protocol: Protocol, arms: dict[str, dict], *,
             trained: dict[tuple[str, int], tuple[nn.Module, dict]] | None = None) -> dict:
    """Train one student per (arm, seed) through ``protocol``, then test each final model once.

    ``arms`` maps a name to the arm's :meth:`Protocol.train` options (``T``, ``alpha``, optionally ``teacher``,
    ``teacher_views``, ``method``, ...). ``trained`` holds runs made already (e.g. while choosing settings),
    keyed by (arm, seed): they are tested, not retrained. Returns, per arm, the teacher's test accuracy,
    summaries over seeds of :data:`REPORTED`, and the runs (records without their models).
    """
    if not arms:
        raise ValueError("need at least one arm")
    trained = trained or {}
    out = {}
    for name, options in arms.items():
        options = dict(options)
        teacher = freeze(options.pop("teacher")) if "teacher" in options else protocol.teacher
        runs = []
        for seed in protocol.budget.seeds:
            if (name, seed) in trained:
                model, record = trained[name, seed]
            else:
                protocol.say(f"{name}: seed {seed}")
                model, record = protocol.train(seed, teacher=teacher, **options)
            record.update(arm=name, **protocol.test(model, options["T"], teacher))
            protocol.say(f"    {name}, seed {seed}: final validation accuracy {record['val_acc']:.4f}, "
                         f"test accuracy {record['test_acc']:.4f} ({record['seconds']:.0f} s)")
            runs.append(record)
        out[name] = {"teacher_test_acc": accuracy(protocol.teacher_test_logits(teacher), protocol.data.test_labels),
                     **{k: summarize([r[k] for r in runs]) for k in REPORTED}, "runs": runs}
    return out


def summaries(arm: dict) -> dict:
    """An arm of :func:`run_arms` without its runs."""
    return {k: v for k, v in arm.items() if k != "runs"}



def run_chosen(protocol: Protocol, name: str, candidates: Sequence[tuple[float, float]], *,
               teacher: nn.Module | None = None, **options) -> dict:
    """An arm whose (T, alpha) is chosen among ``candidates`` on validation with the first seed, then run with
    every seed (05_distill_student): :func:`run_arms`' arm plus ``chosen`` and each candidate's validation accuracy.
    ``options`` are further :meth:`Protocol.train` options of every run (e.g. ``targets``)."""
    best, tried = choose_on_validation(protocol, candidates, teacher=teacher, **options)
    T, alpha = candidates[best]
    options = {"T": T, "alpha": alpha, **options, **({"teacher": teacher} if teacher is not None else {})}
    arm = run_arms(protocol, {name: options}, trained={(name, protocol.budget.seeds[0]): tried[best]})[name]
    return {"chosen": {"T": T, "alpha": alpha},
            "candidates": [{"T": r["T"], "alpha": r["alpha"], "val_acc": r["val_acc"]} for _, r in tried], **arm}
