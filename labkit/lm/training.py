"""The training loop of 12_distill_language_model: an objective (labels or a teacher's distributions) and AdamW
with warm-up and cosine decay, checkpointed."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit import settings
from labkit.atomic import load_checked, save_checked
from labkit.history import History
from labkit.lm.batches import TokenBatch
from labkit.lm.losses import next_token_cross_entropy
from labkit.lm.model import CharTransformer, _device
from labkit.train import NonFiniteLossError, ResumeError
from labkit.teacher import short_identity


Objective = Callable[[nn.Module, TokenBatch], torch.Tensor]


def describe_objective(objective: Objective) -> str:
    """A name for ``objective`` that a checkpoint records, so that a run is not resumed under another loss
    (12_distill_language_model): :func:`teacher_objective`'s names its divergence and its settings."""
    return getattr(objective, "description", getattr(objective, "__qualname__", type(objective).__name__))


def _divergence_name(divergence: Callable) -> str:
    if isinstance(divergence, functools.partial):
        settings_ = ", ".join(f"{k}={v!r}" for k, v in sorted(divergence.keywords.items()))
        return f"{_divergence_name(divergence.func)}({settings_})"
    return getattr(divergence, "__qualname__", type(divergence).__name__)


def ce_objective(model: nn.Module, batch: TokenBatch) -> torch.Tensor:
    """Next-token cross-entropy on ``batch``'s counted targets: training from text (12_distill_language_model)."""
    k = batch.first_target
    return next_token_cross_entropy(model(batch.inputs)[:, k:], batch.targets[:, k:])


def teacher_objective(teacher: nn.Module, divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Objective:
    """An objective matching ``teacher``'s next-token distributions on the batch, ``divergence(student, teacher)``.

    Introduced in 12_distill_language_model: ``divergence`` is :func:`forward_kl`, :func:`reverse_kl` or
    :func:`generalized_jsd` (``functools.partial`` sets T or beta). The teacher is put in eval mode and run
    without gradients.
    """
    teacher.eval()

    def objective(model: nn.Module, batch: TokenBatch) -> torch.Tensor:
        k = batch.first_target
        with torch.no_grad():
            teacher_logits = teacher(batch.inputs)[:, k:]
        return divergence(model(batch.inputs)[:, k:], teacher_logits)

    objective.description = f"teacher_objective({_divergence_name(divergence)}, teacher {short_identity(teacher)})"
    return objective


@dataclass(frozen=True)
class LMTrainConfig:
    """Settings of :func:`train_lm` (12_distill_language_model): AdamW at ``lr``, linear warm-up over
    ``warmup_steps``, then cosine decay to ``final_lr * lr``; gradients clipped to norm ``grad_clip``."""

    steps: int = 2000
    lr: float = 2e-3
    final_lr: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 250

    def __post_init__(self):
        if min(self.steps, self.log_every, self.checkpoint_every) < 1 or not self.lr > 0 or self.warmup_steps < 0:
            raise ValueError(f"steps, log_every, checkpoint_every and lr must be positive, warmup_steps >= 0: {self}")


def lr_multiplier(step: int, config: LMTrainConfig) -> float:
    """Factor of ``config.lr`` at 0-based ``step``: linear warm-up, then cosine decay to ``config.final_lr``.

    Introduced in 12_distill_language_model (plotted there).
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.final_lr + (1 - config.final_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_lm(model: CharTransformer, batches: Callable[[torch.Generator], TokenBatch], objective: Objective,
             config: LMTrainConfig | None = None, *, out: str | Path | None = None, resume: bool = False,
             evaluate: Callable[[nn.Module], dict] | None = None, progress: bool = True, desc: str = "train",
             on_step: Callable[[int], None] | None = None, **overrides) -> History:
    """Train ``model`` for ``config.steps`` steps on ``batches(generator)`` with ``objective(model, batch)``.

    Introduced in 12_distill_language_model, where each arm is one call: the batches say on whose text
    (:func:`batch_from_corpus`, :func:`batch_from_model_samples`), the objective which loss (:func:`ce_objective`,
    :func:`teacher_objective`). AdamW (betas 0.9, 0.95; weight decay on matrices only), the schedule of
    :func:`lr_multiplier`, gradient clipping, forward passes in :func:`labkit.settings.precision`. Every ``log_every`` steps a row (mean
    loss, lr, tokens per second, and ``evaluate(model)``'s numbers) joins the returned :class:`History`. With
    ``out`` (a folder per run) a checkpoint is written every ``checkpoint_every`` steps and ``resume=True``
    continues from it, reproducing the uninterrupted run: all randomness comes from one seeded generator (and
    torch's, for dropout), saved with it. ``overrides`` replace fields of ``config``.
    """
    config = replace(config or LMTrainConfig(), **overrides)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise NotADirectoryError(f"out={str(out)!r} is a file; pass a folder (one per run) for the checkpoint")
    device = _device(model)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": config.weight_decay},
                                   {"params": others, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(config.seed)
    computed_in = settings.precision(device)
    run = {"train": asdict(config), "model": asdict(model.config), "compute": {"precision": computed_in},
           "objective": {"name": describe_objective(objective)}}
    history, step, interval = History(precision=computed_in), 0, {"loss": 0.0, "steps": 0, "tokens": 0}
    checkpoint = Path(out) / "checkpoint.pt" if out is not None else None
    if resume and checkpoint is not None and checkpoint.is_file():
        state = _read_checkpoint(checkpoint, run)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history, step, interval = History(state["history"], computed_in), state["step"], state["interval"]
    model.train()
    started = time.perf_counter()
    bar = tqdm(range(step, config.steps), initial=step, total=config.steps, desc=desc, disable=not progress, leave=False)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_multiplier(step, config)
        batch = batches(generator)
        batch = batch._replace(tokens=batch.tokens.to(device))
        with settings.autocast(device):
            loss = objective(model, batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss became {loss.item()} at step {step + 1} (lr {optimizer.param_groups[0]['lr']:.3g}); "
                                     "lower the learning rate or check the inputs")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        interval["loss"] += loss.item()
        interval["steps"] += 1
        interval["tokens"] += batch.inputs.numel()
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            seconds = time.perf_counter() - started
            row = {"step": done, "loss": interval["loss"] / interval["steps"], "lr": optimizer.param_groups[0]["lr"],
                   "tokens_per_s": round(interval["tokens"] / seconds, 1)}
            row.update(evaluate(model) if evaluate is not None else {})
            model.train()  # evaluate may have left the model in eval mode
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            interval, started = {"loss": 0.0, "steps": 0, "tokens": 0}, time.perf_counter()
        if checkpoint is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            save_checked({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done,
                               "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                               "history": history.rows, "interval": interval, "run": run}, checkpoint)
            history.to_csv(Path(out) / "history.csv")
        if on_step is not None:
            on_step(done)
    return history


def _read_checkpoint(path: Path, run: dict) -> dict:
    try:
        state = load_checked(path)
        # older checkpoints lack the precision (all float32) and the objective (not checked for them)
        saved = {"compute": {"precision": settings.LEGACY_PRECISION}, "objective": run["objective"], **state["run"]}
    except Exception as err:
        raise ResumeError(f"the checkpoint {path} cannot be read ({type(err).__name__}: {err}); delete it to train "
                          "from scratch, or pass another out=") from None
    if saved != run:
        differ = sorted(f"{part}.{k}" for part in run for k in run[part] if saved.get(part, {}).get(k) != run[part][k])
        raise ResumeError(f"the checkpoint {path} was written with other settings ({', '.join(differ)}); resume with "
                          "the checkpoint's settings, or pass another out= for a new run")
    return state
