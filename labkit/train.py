"""Training and distillation loops with checkpoints and resume (introduced in 04_cifar_teacher / 05_distill_student).

The recipe is airbench94's, written for this course: Nesterov SGD with hyperparameters expressed per 1024
examples, a warm-up then linear-decay schedule, label smoothing, a frozen whitening stem whose bias trains for
the first epochs, lookahead-style weight averaging, and channels_last convolutions.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from tqdm.notebook import tqdm as notebook_tqdm

from labkit.atomic import load_checked, save_checked
from labkit.data import CifarData, pixel_digest, training_set_digest
from labkit.distillation import distillation_loss_parts, kl_at_temperature
from labkit.distributed import SingleProcess, processes
from labkit.evaluate import accuracy, agreement, predict_logits
from labkit.history import History
from labkit.loader import AIRBENCH, Augment, AugmentedView, Batch, Loader, make_views
from labkit.models import CifarNet, init_whitening, is_whitened
from labkit.settings import LEGACY_PRECISION, PRECISION_ENV
from labkit.teacher import FrozenTeacher, short_identity, teacher_logits_for_views
from labkit.transfer import TransferSetError, count_unlabelled, labelled_mask
from labkit.validate import NonFiniteLogitsError, check_alpha, check_temperature


@dataclass
class TrainConfig:
    """Every setting of a run; ``lr`` and ``weight_decay`` are per 1024 examples (batch-size independent)."""

    epochs: float = 10.0
    batch_size: int = 1024
    lr: float = 11.5
    momentum: float = 0.85
    weight_decay: float = 0.0153
    bias_scaler: float = 64.0  # BatchNorm biases learn this much faster (their weight decay is unchanged)
    label_smoothing: float = 0.2
    warmup_start: float = 0.2  # the schedule rises from warmup_start*lr to lr at peak_at of training ...
    peak_at: float = 0.23
    final_lr: float = 0.07  # ... then falls linearly to final_lr*lr
    ema_start_epoch: int = 3
    ema_decay: float = 0.95
    ema_power: float = 3.0
    ema_every: int = 5
    whiten_bias_epochs: int = 3
    augment: Augment = field(default_factory=lambda: AIRBENCH)
    seed: int = 0
    channels_last: bool = True
    eval_tta: str = "none"  # per-epoch test evaluation; the final report can add TTA

    def __post_init__(self):
        if not math.isfinite(self.epochs):
            raise ValueError(f"epochs must be a finite number > 0, got {self.epochs}")
        if not self.epochs > 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs, batch_size and lr must be positive: {self}")


class TrainingDivergedError(FloatingPointError):
    """Training blew up; the message names where and what to do (04_cifar_teacher)."""


class NonFiniteLossError(TrainingDivergedError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class NonFiniteWeightsError(TrainingDivergedError):
    """A parameter or buffer (e.g. a BatchNorm running variance) became NaN or infinite; the message names it."""


class NoTrainingStepsError(ValueError):
    """The training set holds no full batch, so not one step would be taken."""


class ResumeError(ValueError):
    """A checkpoint cannot be resumed: unreadable, or written with other settings (the message names them)."""


class ChanceLevelWarning(UserWarning):
    """After a whole epoch the model still predicts like a coin toss: the learning rate is likely far too high."""


def lr_schedule(total_steps: int, config: TrainConfig) -> torch.Tensor:
    """Multiplier of ``lr`` at each step: linear warm-up to 1 at ``peak_at``, then linear decay to ``final_lr``."""
    peak = max(1, int(config.peak_at * total_steps))
    up = torch.linspace(config.warmup_start, 1.0, peak + 1)[:-1]
    down = torch.linspace(1.0, config.final_lr, total_steps + 1 - peak)
    return torch.cat([up, down])


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """Nesterov SGD with airbench's decoupled lr/momentum/weight decay and faster BatchNorm biases."""
    kilostep_scale = 1024 * (1 + 1 / (1 - config.momentum))
    lr = config.lr / kilostep_scale
    wd = config.weight_decay * config.batch_size / kilostep_scale
    # a quantization-aware graph (labkit.compress.QatModel) has no BatchNorm modules: it names their parameters
    norms = model.batchnorm_parameters() if hasattr(model, "batchnorm_parameters") else \
        [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    norm_biases = [p for p in norms if p.requires_grad]
    ids = {id(p) for p in norm_biases}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    # SGD's weight decay is multiplied by the group lr: dividing by it makes the decay equal for both groups.
    groups = [dict(params=norm_biases, lr=lr * config.bias_scaler, weight_decay=wd / (lr * config.bias_scaler)),
              dict(params=others, lr=lr, weight_decay=wd / lr)]
    return torch.optim.SGD(groups, momentum=config.momentum, nesterov=True)


class WeightAverage:
    """airbench's lookahead: every few steps pull an exponential average towards the weights, then copy it back."""

    def __init__(self, model: nn.Module):
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model: nn.Module, decay: float) -> None:
        with torch.no_grad():
            for avg, current in zip(self.state.values(), model.state_dict().values()):
                if current.is_floating_point():
                    avg.lerp_(current, 1 - decay)
                    current.copy_(avg)


# A terminal redraws its bar in place, so each finished epoch also prints a line there; in a notebook the epoch rows
# stay in the returned History, and the experiment shows one summary table instead of a log.
EPOCH_LINES = not issubclass(tqdm, notebook_tqdm)

Mixer = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]


def _fit(model: nn.Module, loader: Loader, loss_fn: LossFn, config: TrainConfig, *,
         evaluate_epoch: Callable[[nn.Module], dict], run: dict, out: str | Path | None, resume: bool,
         progress: bool, desc: str, on_step: Callable[[int], None] | None, parallel: SingleProcess,
         callbacks: Sequence[Callable[[dict], None]], chance_check: bool = True) -> History:
    """The loop shared by :func:`train` and :func:`distill`: schedule, averaging, checkpoints, history.

    ``model`` itself is averaged, evaluated and saved; ``parallel`` may wrap it for training (docs/scaling.md).
    ``run`` holds every setting of the run; a checkpoint written with other settings is refused on resume.
    ``callbacks`` (e.g. :mod:`labkit.tracking`'s loggers) get each finished epoch's row on the main process.
    """
    torch.manual_seed(config.seed)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    parallel.place(model)
    total_steps = math.ceil(len(loader) * config.epochs)
    schedule = lr_schedule(total_steps, config)
    optimizer = make_optimizer(model, config)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    run = {**run, "precision": parallel.precision(model)}
    history, average, step, start_epoch = History(precision=run["precision"]), None, 0, 0
    checkpoint = Path(out) / "checkpoint.pt" if out else None
    if resume and checkpoint is not None and checkpoint.is_file():
        state = _read_checkpoint(checkpoint, run)
        model.load_state_dict(state["model"])  # both loads copy onto the model's device
        optimizer.load_state_dict(state["optimizer"])
        history, step, start_epoch = History(state["history"], run["precision"]), state["step"], state["epoch"]
        if state["average"] is not None:
            average = WeightAverage(model)
            average.state = {k: parallel.place(v) for k, v in state["average"].items()}
        torch.set_rng_state(state["rng"])
    trained, optimizer = parallel.prepare(model, optimizer)
    whitened = isinstance(model, CifarNet) and model.whiten
    epochs = math.ceil(config.epochs)
    for epoch in range(start_epoch, epochs):
        if whitened:
            model.stem.bias.requires_grad_(epoch < config.whiten_bias_epochs)
        loader.epoch = epoch
        trained.train()
        started, sums = time.perf_counter(), {"seen": 0.0, "labelled": 0.0, "correct": 0.0, "label_ce": 0.0}
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not (progress and parallel.is_main_process))
        for batch in bar:
            if step >= total_steps:
                break
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * schedule[step].item()
            batch = parallel.shard(batch)
            with parallel.autocast(model, run["precision"]):  # decided once: the step does not read the environment
                try:
                    loss, logits, parts = loss_fn(trained, batch)
                except NonFiniteLogitsError as err:  # a diverged student: reported like a non-finite loss
                    raise NonFiniteLossError(f"{err} (epoch {epoch + 1}, step {step + 1}, lr "
                                             f"{optimizer.param_groups[1]['lr']:.3g}); lower the learning rate "
                                             "or check the inputs") from err
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                                         f"(lr {optimizer.param_groups[1]['lr']:.3g}); lower the learning rate "
                                         "or check the inputs")
            optimizer.zero_grad(set_to_none=True)
            parallel.backward(loss)
            optimizer.step()
            step += 1
            if epoch >= config.ema_start_epoch and step % config.ema_every == 0:
                if average is None:
                    average = WeightAverage(model)
                else:
                    rho = config.ema_decay ** config.ema_every * (step / total_steps) ** config.ema_power
                    average.update(model, rho)
            n, has_label = len(batch.labels), labelled_mask(batch.labels)
            sums["seen"] += n
            sums["labelled"] += has_label.sum().item()
            sums["correct"] += (logits.argmax(1) == batch.labels)[has_label].sum().item()
            sums["label_ce"] += F.cross_entropy(logits[has_label].float(), batch.labels[has_label],
                                                reduction="sum").item()
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + v.item()  # losses are sums over the batch
            bar.set_postfix(loss=f"{loss.item() / n:.3f}")
            if on_step is not None:
                on_step(step)
        if average is not None:
            average.update(model, 1.0)
        _check_finite_state(model, epoch, optimizer.param_groups[1]["lr"])
        seconds = time.perf_counter() - started
        sums = parallel.total(sums)
        seen, labelled, correct, label_ce = (sums.pop(k) for k in ("seen", "labelled", "correct", "label_ce"))
        # train_acc is over the labelled images only: unlabelled ones (a transfer set) have nothing to be right about
        row = {"epoch": epoch + 1, "train_acc": correct / labelled if labelled else float("nan"),
               **{k: v / max(seen, 1) for k, v in sums.items()}}
        if chance_check and labelled and parallel.is_main_process:
            _warn_at_chance(label_ce / labelled, row["train_acc"], logits.shape[1], epoch, config)
        row.update(evaluate_epoch(model))
        row.update(seconds=round(seconds, 2), images_per_s=round(seen / seconds, 1))
        history.append(row)
        if progress and EPOCH_LINES and parallel.is_main_process:
            tqdm.write(f"{desc} " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if checkpoint is not None and parallel.is_main_process:
            save_checked({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                               "epoch": epoch + 1, "history": history.rows, "rng": torch.get_rng_state(),
                               "average": None if average is None else average.state,
                               "config": _plain(config), "run": run}, checkpoint)
            history.to_csv(Path(out) / "history.csv")
        if parallel.is_main_process:  # after the checkpoint, so that a failing logger cannot cost the epoch
            for callback in callbacks:
                callback(dict(row))  # a copy each: one callback editing its row cannot change what the next gets
    parallel.wait_for_everyone()  # no process returns before rank 0 has written the last checkpoint
    return history


def _read_checkpoint(path: Path, run: dict) -> dict:
    """The checkpoint's contents, after checking that it was written by a run with the settings ``run``."""
    try:
        state = load_checked(path)
        saved = {"precision": LEGACY_PRECISION, **state.get("run", state["config"])}  # older checkpoints lack keys
    except Exception as err:
        raise ResumeError(f"the checkpoint {path} cannot be read ({type(err).__name__}: {err}); delete it to train "
                          "from scratch, or pass another out=") from None
    differ = sorted(k for k in run if k in saved and saved[k] != run[k])
    if differ:
        changes = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {run[k]!r} now" for k in differ)
        precision = (f" (set {PRECISION_ENV}={saved['precision']} to resume it)" if "precision" in differ else "")
        raise ResumeError(f"the checkpoint {path} was written with other settings ({changes}); resume with the "
                          f"checkpoint's settings{precision}, or pass another out= for a new run")
    return state


def _check_finite_state(model: nn.Module, epoch: int, lr: float) -> None:
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteWeightsError(f"after epoch {epoch + 1} these tensors hold NaN or inf values: {shown} "
                                    f"(lr {lr:.3g}); lower the learning rate")


def _warn_at_chance(label_ce: float, train_acc: float, num_classes: int, epoch: int, config: TrainConfig) -> None:
    # A model that predicts the uniform distribution scores ln C, whatever it is shown; a fresh one comes close in
    # its first epoch, so only later epochs are judged.
    if epoch > 0 and abs(label_ce - math.log(num_classes)) < 5e-4 and train_acc < 1.5 / num_classes:
        warnings.warn(f"after epoch {epoch + 1} the training cross-entropy is {label_ce:.4f}, chance level "
                      f"(ln {num_classes} = {math.log(num_classes):.4f}), and the training accuracy "
                      f"{train_acc:.1%}: the model predicts the uniform distribution. The learning rate "
                      f"({config.lr:g} per 1024 examples) is probably far too high.", ChanceLevelWarning, stacklevel=3)


def _plain(config: TrainConfig) -> dict:
    d = asdict(config)
    d["augment"] = asdict(config.augment)
    return d


def prepare_for_training(model: nn.Module, data: CifarData, config: TrainConfig,
                         out: str | Path | None) -> SingleProcess:
    """Checks and set-up every training run needs, in one place; returns how the run is spread over processes.

    Introduced in 04_cifar_teacher. Fails before any work when ``out`` is a file or when the training set holds
    no full batch; a whitened model (the teacher's architecture) gets its whitening stem initialised from the
    data, deterministically, unless it was set already (:func:`labkit.models.is_whitened`: a trained teacher keeps
    its first layer), and its process group is told that the stem's bias stops training mid-run.
    """
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise NotADirectoryError(f"out={str(out)!r} is a file; pass a folder for the checkpoint and history.csv")
    n = len(data.train_labels)
    if n == 0:
        raise NoTrainingStepsError("the training set is empty (0 images): nothing would train; check the subset or "
                                   "mask that made it")
    outputs = getattr(getattr(model, "head", None), "out_features", None)
    if outputs is not None and outputs != len(data.classes):
        raise ValueError(f"the model has {outputs} classes (outputs) and the data {len(data.classes)}: create it with "
                         f"num_classes={len(data.classes)}")
    if n < config.batch_size:
        raise NoTrainingStepsError(f"{n} training images make no full batch of {config.batch_size} (the last, "
                                   f"incomplete batch is dropped), so nothing would train; pass batch_size <= {n}")
    whitened = isinstance(model, CifarNet) and model.whiten
    parallel = processes(find_unused_parameters=whitened)
    if whitened and not is_whitened(model):  # deterministic; a resumed run then loads its weights
        init_whitening(model, data.train_images[:5000].float() / 255)
    return parallel


def _evaluation(data: CifarData) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The split watched every epoch, and its column prefix: validation when ``data`` holds one, else test."""
    if data.val_images is not None:
        return "val", data.val_images, data.val_labels
    return "test", data.test_images, data.test_labels


def train(model: nn.Module, data: CifarData, epochs: float | None = None, *, config: TrainConfig | None = None,
          out: str | Path | None = None, resume: bool = False, progress: bool = True,
          on_step: Callable[[int], None] | None = None, callbacks: Sequence[Callable[[dict], None]] = (),
          **overrides) -> History:
    """Supervised training on ``data.train_*`` with the course recipe; returns the per-epoch :class:`History`.

    Introduced in 04_cifar_teacher. ``epochs`` and keyword ``overrides`` replace fields of ``config``
    (a :class:`TrainConfig`). Every epoch is evaluated on ``data``'s validation split when it has one (columns
    ``val_*``), else on its test split (``test_*``). With ``out`` a checkpoint is written atomically after every
    epoch, and ``resume=True`` continues from it, reproducing the uninterrupted run for the same seed (a
    checkpoint written with other settings is refused); ``history.csv`` is written there too (CSV is the
    default tracker). ``callbacks`` are called with each epoch's row on the main process, e.g.
    :class:`labkit.tracking.TensorBoardLogger` (05_distill_student). It runs on :func:`labkit.device`, and under
    ``accelerate launch`` it trains data parallel with the same global batch (docs/scaling.md). ``progress``
    shows a bar per epoch, and in a terminal also prints each finished epoch's row (:data:`EPOCH_LINES`).
    """
    if count_unlabelled(data):
        raise TransferSetError(f"{count_unlabelled(data):,} training images have no label, and train() learns from "
                               "labels only: distill them from a teacher (labkit.train.distill), give them the "
                               "teacher's labels (labkit.transfer.pseudo_labelled), or keep only the labelled ones "
                               "(labkit.transfer.labelled_part)")
    config = _configure(config, epochs, overrides)
    parallel = prepare_for_training(model, data, config, out)
    loader = Loader(parallel.place(data.train_images), parallel.place(data.train_labels), config.batch_size,
                    augment=config.augment, drop_last=True, seed=config.seed, channels_last=config.channels_last)
    split, eval_images, eval_labels = _evaluation(data)

    def loss_fn(m: nn.Module, batch: Batch):
        logits = m(batch.images)
        # in float32 even under bf16 autocast, as labkit.distillation's losses are
        loss = F.cross_entropy(logits.float(), batch.labels, label_smoothing=config.label_smoothing, reduction="sum")
        return loss, logits.detach(), {}

    def evaluate_epoch(m: nn.Module) -> dict:
        logits = predict_logits(m, eval_images, tta=config.eval_tta, channels_last=config.channels_last,
                                precision=parallel.precision(m))  # the run's own; History records which
        return {f"{split}_acc": accuracy(logits, eval_labels)}

    run = {"kind": "train", **_plain(config), "data": training_set_digest(data), "pixels": pixel_digest(data)}
    return _fit(model, loader, loss_fn, config, evaluate_epoch=evaluate_epoch, run=run, out=out, resume=resume,
                progress=progress, desc="train", on_step=on_step, parallel=parallel, callbacks=callbacks)


def distill(student: nn.Module, teacher: nn.Module, data: CifarData, T: float = 2.0, alpha: float = 0.5,
            epochs: float | None = None, *, teacher_views: int = 4, config: TrainConfig | None = None,
            out: str | Path | None = None, resume: bool = False, progress: bool = True,
            on_step: Callable[[int], None] | None = None, mix: Mixer | None = None,
            extra_loss: Callable[[Batch], torch.Tensor] | None = None, views_seed: int | None = None,
            targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
            kl_T: float | None = None, callbacks: Sequence[Callable[[dict], None]] = (), **overrides) -> History:
    """Train ``student`` with :func:`labkit.distillation_loss` against a frozen ``teacher`` (05_distill_student).

    With ``teacher_views=K > 0`` the teacher's logits are computed once for K fixed augmented views of the
    training set (cached on disk, keyed by the teacher's weights and the views) and epoch e trains on view
    e % K, so further students cost student time only. The views are drawn from ``views_seed`` (default: the
    run's ``seed``); fixing it lets runs with different seeds (batch orders) share the cached logits.
    ``teacher_views=0`` is online distillation: teacher
    and student see the same freshly augmented batch. The history adds the soft (KL) and hard (CE) parts,
    and the teacher-student agreement and KL at temperature ``kl_T`` (default ``T``) on the evaluation split
    (``val_*`` when ``data`` holds a validation split, else ``test_*``): runs at different ``T`` compare their
    distances to the teacher only at one ``kl_T``. ``out``, ``resume`` and ``callbacks`` are :func:`train`'s;
    :mod:`labkit.tracking` has loggers for TensorBoard and Weights & Biases.

    Two hooks serve 08_beyond_logits. ``mix(images, generator)`` replaces every online batch by a mixed one
    that teacher and student both see (function matching); the labels no longer describe mixed images, so it
    needs ``alpha=1``. ``extra_loss(batch)``, called after both forward passes, adds a per-example-mean term
    (e.g. a feature hint), tracked as ``extra_part``.

    A transfer set (:mod:`labkit.transfer`) mixes labelled and unlabelled training images: the unlabelled ones
    get the soft term only. ``targets(teacher_logits, labels)`` replaces the teacher's logits of every training
    batch, e.g. by :class:`labkit.controls.ClassAverageTargets` (05_distill_student). A run whose loss never reads the
    teacher's logits of the training images (``alpha=0``, or :func:`labkit.controls.uniform_targets`) skips the
    teacher's passes over them; its validation columns still measure the teacher.

    Under ``accelerate launch`` the student trains data parallel (docs/scaling.md); the teacher is not handed to
    Accelerate, so it stays frozen and outside the gradient averaging, and each process runs it on its own slice.
    """
    T, alpha = check_temperature(T), check_alpha(alpha)
    kl_T = T if kl_T is None else check_temperature(kl_T)
    if mix is not None and (teacher_views > 0 or alpha < 1):
        raise ValueError("mixed batches need the online teacher (teacher_views=0) and alpha=1: the labels do not "
                         f"describe mixed images (got teacher_views={teacher_views}, alpha={alpha})")
    unlabelled = _check_transfer_set(data, alpha)
    if targets is not None and getattr(targets, "T", T) != T:
        raise ValueError(f"these targets were built for T={targets.T:g}; distill at that temperature (got T={T:g})")
    config = _configure(config, epochs, overrides)
    parallel = prepare_for_training(student, data, config, out)
    progress = progress and parallel.is_main_process
    if mix is not None and parallel.num_processes > 1:
        raise ValueError("mixed batches (function matching) run in one process only: each process would draw "
                         "mixing partners from its own slice of the batch")
    views_seed = config.seed if views_seed is None else views_seed
    split, eval_images, eval_labels = _evaluation(data)
    frozen = parallel.place(teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(teacher))
    reads_teacher = _reads_teacher(alpha, targets)
    if teacher_views > 0:
        views = make_views(data.train_images, config.augment, teacher_views, seed=views_seed)
    with parallel.main_process_first():  # one process per machine fills the logit cache, the others read it
        eval_teacher = teacher_logits_for_views(frozen, [eval_images], progress=progress)[0]
        if teacher_views > 0 and reads_teacher:
            cached = parallel.place(teacher_logits_for_views(frozen, views, progress=progress))
    images, labels = parallel.place(data.train_images), parallel.place(data.train_labels)  # moved once, for all views
    if teacher_views > 0:
        loader = Loader([AugmentedView(images, v.augment, v.offsets, v.flips) for v in views], labels,
                        config.batch_size, drop_last=True, seed=config.seed, channels_last=config.channels_last)
        teacher_batch = lambda batch: cached[batch.view][batch.index]
    else:
        loader = Loader(images, labels, config.batch_size, augment=config.augment,
                        drop_last=True, seed=config.seed, channels_last=config.channels_last)
        teacher_batch = lambda batch: frozen(batch.images)
    if not reads_teacher:  # the loss would multiply the teacher's logits by 0, or replace them: zeros cost nothing
        num_classes = len(data.classes)
        teacher_batch = lambda batch: batch.images.new_zeros(len(batch.labels), num_classes, dtype=torch.float32)

    if mix is not None:
        generator = torch.Generator().manual_seed(config.seed)
        mixed = lambda batch: batch._replace(images=mix(batch.images, generator))
    else:
        mixed = lambda batch: batch

    def loss_fn(m: nn.Module, batch: Batch):
        batch = mixed(batch)
        # Teacher first: its activations are freed before the student's are held for the backward pass.
        teacher_logits = teacher_batch(batch)
        if targets is not None:
            teacher_logits = targets(teacher_logits, batch.labels)
        logits = m(batch.images)
        parts = distillation_loss_parts(logits, teacher_logits, batch.labels, T=T, alpha=alpha,
                                        labelled=labelled_mask(batch.labels) if unlabelled else None)
        n = len(batch.labels)
        found = {"kl_part": parts.soft.detach() * n, "ce_part": parts.hard.detach() * n}
        total = parts.total
        if extra_loss is not None:
            extra = extra_loss(batch)
            total = total + extra
            found["extra_part"] = extra.detach() * n
        return total * n, logits.detach(), found

    def evaluate_epoch(m: nn.Module) -> dict:
        logits = predict_logits(m, eval_images, tta=config.eval_tta, channels_last=config.channels_last,
                                precision=parallel.precision(m))  # the run's own; History records which
        return {f"{split}_acc": accuracy(logits, eval_labels), f"{split}_agreement": agreement(logits, eval_teacher),
                f"{split}_kl": kl_at_temperature(logits, eval_teacher, kl_T).item()}

    run = {"kind": "distill", **_plain(config), "data": training_set_digest(data), "pixels": pixel_digest(data),
           "T": T, "alpha": alpha,
           "teacher_views": teacher_views,
           "views_seed": views_seed, "teacher": short_identity(frozen),
           "mix": getattr(mix, "__name__", None), "extra_loss": extra_loss is not None,
           "targets": getattr(targets, "__name__", None), **({"kl_T": kl_T} if kl_T != T else {})}
    return _fit(student, loader, loss_fn, config, evaluate_epoch=evaluate_epoch, run=run, out=out, resume=resume,
                progress=progress, desc=f"distill T={T:g} alpha={alpha:g}", on_step=on_step, parallel=parallel,
                callbacks=callbacks, chance_check=mix is None)


def _reads_teacher(alpha: float, targets: Callable | None) -> bool:
    """Whether a run's loss reads the teacher's logits of its training images: not at ``alpha = 0``, nor when
    ``targets`` replaces them whatever they are (``reads_teacher = False``, e.g. :func:`labkit.controls.uniform_targets`).
    Such labels-only runs then skip the teacher's passes over the training images (their results are unchanged)."""
    return alpha > 0 and getattr(targets, "reads_teacher", True)


def _check_transfer_set(data: CifarData, alpha: float) -> int:
    """The number of unlabelled training images, after checking that ``alpha`` gives each kind a use."""
    unlabelled = count_unlabelled(data)
    if unlabelled == len(data.train_labels) and alpha < 1:
        raise TransferSetError(f"no training image has a label, so the hard term (weight 1 - alpha = {1 - alpha:g}) "
                               "has nothing to learn from: use alpha=1, or label some images")
    if unlabelled and alpha == 0:
        raise TransferSetError(f"alpha=0 learns from labels only, so the {unlabelled:,} unlabelled images would add "
                               "nothing: raise alpha, or train on the labelled images alone (labkit.transfer.labelled_part)")
    return unlabelled


def _configure(config: TrainConfig | None, epochs: float | None, overrides: dict) -> TrainConfig:
    config = config or TrainConfig()
    if epochs is not None:
        overrides = {**overrides, "epochs": epochs}
    return replace(config, **overrides) if overrides else config
