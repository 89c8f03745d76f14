"""The budget and helpers of 12_distill_language_model's comparison of distillation arms."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from labkit.lm.batches import TokenBatch, batch_from_model_samples
from labkit.lm.model import CharTransformer, LMConfig
from labkit.lm.training import LMTrainConfig
from labkit.settings import pick


@dataclass(frozen=True)
class DistillBudget:
    """Every size of 12_distill_language_model's experiment in one place (:func:`distill_budget`).

    Each arm trains a fresh student of ``n_layer`` layers and width ``d_model`` (the same initial weights: seed
    ``seed``) for ``steps`` steps of ``batch_size`` windows of ``context`` characters. The on-policy arms sample
    ``context + 1 - prompt_length`` characters per window after a corpus prompt; sequence-level KD draws its
    windows from ``teacher_rows`` texts the teacher wrote once. Measurements use ``samples`` samples per model and
    the first ``held_out_chars`` held-out characters (None: all of them); the learning curves the first
    ``monitor_chars``. ``extra_seeds`` retrain the cross-entropy arm to show how much one seed's numbers move;
    ``sweep_steps`` is exercise 3's shorter budget per beta.
    """

    steps: int = 400
    batch_size: int = 32
    context: int = 64
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    lr: float = 2e-3
    prompt_length: int = 8
    teacher_rows: int = 4096
    samples: int = 128
    held_out_chars: int | None = None
    monitor_chars: int = 4096
    seed: int = 0
    extra_seeds: tuple[int, ...] = (1, 2)
    sweep_steps: int = 100

    def student_config(self, vocab_size: int) -> LMConfig:
        return LMConfig(vocab_size, context=self.context, n_layer=self.n_layer, n_head=self.n_head,
                        d_model=self.d_model)

    def train_config(self, **overrides) -> LMTrainConfig:
        """AdamW at ``lr``, warm-up over the first tenth of the steps, a learning-curve row every eighth."""
        steps = overrides.pop("steps", self.steps)
        settings = dict(steps=steps, lr=self.lr, warmup_steps=max(1, steps // 10), log_every=max(1, steps // 8),
                        seed=self.seed)
        return LMTrainConfig(**{**settings, **overrides})

    @property
    def positions_per_arm(self) -> int:
        """Input positions a student reads in one arm: steps x batch x context."""
        return self.steps * self.batch_size * self.context


def distill_budget() -> DistillBudget:
    """12_distill_language_model's budget: the full one, or a quick one of seconds per arm in quick mode."""
    return pick(DistillBudget(), DistillBudget(steps=24, batch_size=16, teacher_rows=256, samples=32,
                                               held_out_chars=8000, monitor_chars=2048, extra_seeds=(1,),
                                               sweep_steps=8))


def model_text(model: CharTransformer, prompts_from: torch.Tensor, num_rows: int, context: int,
               generator: torch.Generator, prompt_length: int = 8, batch_size: int = 256,
               temperature: float = 1.0, progress: bool = True) -> TokenBatch:
    """``num_rows`` texts written by ``model`` once: a fixed data set for sequence-level KD (Kim & Rush 2016).

    Introduced in 12_distill_language_model. Each row is a row of :func:`batch_from_model_samples` (a corpus
    prompt of ``prompt_length`` tokens, then the model's samples up to ``context + 1`` tokens), generated
    ``batch_size`` rows at a time, on the CPU; :func:`batch_from_rows` draws training batches from it. Writing
    the teacher's text once and reusing it costs a fraction of sampling the teacher at every training step.
    """
    if num_rows < 1 or batch_size < 1:
        raise ValueError(f"num_rows and batch_size must be >= 1, got {num_rows} and {batch_size}")
    rows, done = [], 0
    with tqdm(total=num_rows, desc="model text", disable=not progress, leave=False) as bar:
        while done < num_rows:
            n = min(batch_size, num_rows - done)
            rows.append(batch_from_model_samples(model, prompts_from, n, context, generator, prompt_length,
                                                 temperature).tokens.cpu())
            done += n
            bar.update(n)
    return TokenBatch(torch.cat(rows), first_target=prompt_length - 1)
