"""Distilling a character-level language model (introduced in 12_distill_language_model).

Everything the notebook needs, small enough to train on a CPU: an offline corpus (Python's own documentation), a
character tokenizer, a nanoGPT-style causal transformer, sampling, the token-level losses of language-model
distillation (forward KL, reverse KL, generalized Jensen-Shannon) and a training loop whose two choices, *on whose
text* (:func:`batch_from_corpus`, :func:`batch_from_model_samples`) and *which loss* (:func:`ce_objective`,
:func:`teacher_objective`), are plain arguments, so each arm of the notebook is one call of :func:`train_lm`.

The package has one module per concept: corpus, tokenizer, model, store (saving and loading), sampling, losses,
topk (a teacher's top-k store), vocabulary (a student with another vocabulary), batches, metrics, training and experiment (the notebook's budget); every public
name is also here. ``labkit.lm.hf`` (the models and tokenizer as Hugging Face ones, batches for TRL) is imported on
its own: it needs the ``llm`` extra.
"""

from __future__ import annotations

from labkit.lm.corpus import CorpusMismatchError, Corpus, load_corpus
from labkit.lm.tokenizer import VocabularyMismatchError, CharTokenizer, check_same_vocabulary
from labkit.lm.model import LMConfig, CausalSelfAttention, Block, CharTransformer
from labkit.lm.store import LoadedLM, save_lm, load_lm, LM_TEACHER_FILE, LM_TEACHER_SHA256, load_lm_teacher
from labkit.lm.sampling import sample
from labkit.lm.losses import forward_kl, reverse_kl, generalized_jsd, next_token_cross_entropy
from labkit.lm.vocabulary import vocabulary_map, project_to_vocabulary
from labkit.lm.topk import TopKTargets, top_k_targets, kept_mass, truncation_kl, top_k_forward_kl, bytes_per_token
from labkit.lm.batches import TokenBatch, batch_from_corpus, batch_from_model_samples, batch_from_rows, text_windows
from labkit.lm.metrics import (bits_per_character, distinct_ngrams, sample_entropy, window_logits, compare_to_teacher,
                               on_policy_metrics)
from labkit.lm.training import (Objective, ce_objective, teacher_objective, describe_objective, LMTrainConfig,
                                lr_multiplier, train_lm)
from labkit.lm.experiment import DistillBudget, distill_budget, model_text

__all__ = [
    "CorpusMismatchError",
    "Corpus",
    "load_corpus",
    "VocabularyMismatchError",
    "CharTokenizer",
    "check_same_vocabulary",
    "LMConfig",
    "CausalSelfAttention",
    "Block",
    "CharTransformer",
    "LoadedLM",
    "save_lm",
    "load_lm",
    "LM_TEACHER_FILE",
    "LM_TEACHER_SHA256",
    "load_lm_teacher",
    "sample",
    "forward_kl",
    "reverse_kl",
    "generalized_jsd",
    "next_token_cross_entropy",
    "TopKTargets",
    "vocabulary_map",
    "project_to_vocabulary",
    "top_k_targets",
    "kept_mass",
    "truncation_kl",
    "top_k_forward_kl",
    "bytes_per_token",
    "TokenBatch",
    "batch_from_corpus",
    "batch_from_model_samples",
    "batch_from_rows",
    "text_windows",
    "bits_per_character",
    "distinct_ngrams",
    "sample_entropy",
    "window_logits",
    "compare_to_teacher",
    "on_policy_metrics",
    "Objective",
    "ce_objective",
    "teacher_objective",
    "describe_objective",
    "LMTrainConfig",
    "lr_multiplier",
    "train_lm",
    "DistillBudget",
    "distill_budget",
    "model_text",
]
