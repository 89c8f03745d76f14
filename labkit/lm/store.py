"""Saving and loading a language model with its vocabulary and corpus hash (safetensors), and the shipped teacher."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from labkit.atomic import atomic_path
from labkit.lm.model import CharTransformer, LMConfig
from labkit.lm.tokenizer import CharTokenizer, VocabularyMismatchError
from labkit.pretrained import WEIGHTS_DIR, WeightsError, load_weights, sha256_of
from labkit.settings import device as default_device


class LoadedLM(NamedTuple):
    """A language model read by :func:`load_lm`, with the vocabulary and corpus it was trained on."""

    model: CharTransformer
    tokenizer: CharTokenizer
    corpus_sha256: str | None


_HEADER_KEY = "labkit.lm"  # the safetensors metadata entry holding config, vocabulary and corpus hash


def save_lm(model: CharTransformer, tokenizer: CharTokenizer, path: str | Path, *,
            corpus_sha256: str | None = None, half: bool = True) -> str:
    """Write ``model`` as safetensors, its config, vocabulary and corpus hash in the header; returns the sha256.

    Introduced in 12_distill_language_model. Saving the vocabulary with the weights ties a shipped teacher to the
    ids it was trained on. With ``half`` the weights are stored as float16, halving the file.
    """
    if tokenizer.vocab_size != model.config.vocab_size:
        raise VocabularyMismatchError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model "
                                      f"{model.config.vocab_size}: save the model with the tokenizer it was trained with")
    state = {k: (v.half() if half else v).contiguous() for k, v in model.state_dict().items()}
    # One metadata entry, its keys sorted: safetensors writes several entries in a random order, and the same
    # model would then give files of different sha256.
    header = {"config": asdict(model.config), "vocabulary": list(tokenizer.chars), "corpus_sha256": corpus_sha256 or ""}
    metadata = {_HEADER_KEY: json.dumps(header, sort_keys=True, ensure_ascii=False)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return sha256_of(path)


def load_lm(path: str | Path, sha256: str | None = None, device: str | torch.device | None = None) -> LoadedLM:
    """The model, tokenizer and corpus hash :func:`save_lm` wrote, checked against ``sha256`` when given.

    Introduced in 12_distill_language_model. The model comes in eval mode on ``device`` (default:
    :func:`labkit.device`). A missing, damaged or altered file is a :class:`~labkit.pretrained.WeightsError`;
    ``load_corpus(expected_sha256=loaded.corpus_sha256)`` then checks that the corpus is the same text.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"language model file {path} is missing; save one with labkit.lm.save_lm")
    if sha256 is not None and (actual := sha256_of(path)) != sha256:
        raise WeightsError(f"language model file {path} is damaged or altered: sha256 {actual}, expected {sha256}. "
                           "Reinstall labkit (e.g. `git checkout -- labkit/weights`) to restore it.")
    try:
        with safe_open(str(path), "pt") as f:
            header = json.loads((f.metadata() or {})[_HEADER_KEY])
        config = LMConfig(**header["config"])
        tokenizer = CharTokenizer(tuple(header["vocabulary"]))
        if tokenizer.vocab_size != config.vocab_size:
            raise WeightsError(f"{path}: its vocabulary has {tokenizer.vocab_size} tokens and its model "
                               f"{config.vocab_size}: the file was edited; save the model again with save_lm")
    except (SafetensorError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path} is not a language model saved by labkit.lm.save_lm ({type(err).__name__}: {err}); "
                           "save it again with save_lm") from None
    with torch.random.fork_rng(devices=[]):  # the random initialisation, overwritten at once, leaves the seed alone
        model = load_weights(CharTransformer(config), path)
    device = default_device() if device is None else device
    return LoadedLM(model.to(device).eval(), tokenizer, header.get("corpus_sha256") or None)


# The shipped teacher of 12_distill_language_model, trained and written by benchmarks/lm_teacher.py; its model card
# is labkit/weights/lm_teacher.md.
LM_TEACHER_FILE = "lm_teacher.safetensors"


# The sha256 of the shipped lm_teacher.safetensors. Empty until the full training run: paste the value that
# `python benchmarks/lm_teacher.py` prints (it is in the model card too). An unpinned file is refused.
LM_TEACHER_SHA256 = "7d96ee98a5af8e85a9a256efad4391884a9a71ce644bac5237e1fc6e9a18c3a5"


def load_lm_teacher(device: str | torch.device | None = None, *, path: str | Path | None = None,
                    sha256: str | None = None) -> LoadedLM:
    """The shipped character-level teacher, verified by its pinned sha256 (introduced in 12_distill_language_model).

    The model comes in eval mode on ``device`` (default :func:`labkit.device`), with the tokenizer it was trained
    with and the sha256 of its corpus, which ``load_corpus(expected_sha256=...)`` compares with the
    corpus labkit ships. ``path`` and ``sha256`` replace the shipped file and :data:`LM_TEACHER_SHA256` (tests use
    them). A missing, unpinned, damaged or altered file is a :class:`~labkit.pretrained.WeightsError`.
    """
    path = WEIGHTS_DIR / LM_TEACHER_FILE if path is None else Path(path)
    sha256 = LM_TEACHER_SHA256 if sha256 is None else sha256
    if not path.is_file():
        raise WeightsError(f"the language-model teacher {path} is missing: train it and write it with "
                           "`python benchmarks/lm_teacher.py` (about 15 minutes on 2 CPU cores, as its model card "
                           "records; `--resume` continues an interrupted run)")
    if not sha256:
        raise WeightsError(f"the language-model teacher {path} has no pinned sha256: set LM_TEACHER_SHA256 in "
                           "labkit/lm/store.py to the sha256 that `python benchmarks/lm_teacher.py` printed (also in "
                           "labkit/weights/lm_teacher.md)")
    return load_lm(path, sha256, device)
