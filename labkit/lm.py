"""Distilling a character-level language model (introduced in 12_distill_language_model).

Everything the notebook needs, small enough to train on a CPU: an offline corpus (Python's own documentation), a
character tokenizer, a nanoGPT-style causal transformer, sampling, the token-level losses of language-model
distillation (forward KL, reverse KL, generalized Jensen-Shannon) and a training loop whose two choices, *on whose
text* (:func:`batch_from_corpus`, :func:`batch_from_model_samples`) and *which loss* (:func:`ce_objective`,
:func:`teacher_objective`), are plain arguments, so each arm of the notebook is one call of :func:`train_lm`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from labkit import settings
from labkit.data import atomic_torch_save
from labkit.distillation import entropy, kl_at_temperature
from labkit.history import History
from labkit.pretrained import WEIGHTS_DIR, WeightsError, load_weights, sha256_of
from labkit.settings import device as default_device
from labkit.settings import pick
from labkit.train import NonFiniteLossError, ResumeError
from labkit.validate import check_logits, check_same_shape, check_temperature, warn_if_probabilities


class VocabularyMismatchError(ValueError):
    """Token ids or a model that belong to another vocabulary than the one in use (12_distill_language_model)."""


class CorpusMismatchError(ValueError):
    """This Python's documentation differs from the text a model was trained on (12_distill_language_model)."""


# --- the corpus -------------------------------------------------------------------------------------------------

class Corpus(NamedTuple):
    """The train and held-out text, the sha256 of the whole corpus and the names of the held-out topics."""

    train: str
    held_out: str
    sha256: str
    held_out_topics: tuple[str, ...]


def load_corpus(expected_sha256: str | None = None) -> Corpus:
    """Python's documentation topics as a train / held-out corpus (introduced in 12_distill_language_model).

    The text is ``pydoc_data.topics.topics``, the ~79 documentation topics (about 465,000 characters of English
    prose and grammar) that ``help()`` shows, shipped with every CPython: no download. It is part of the Python
    documentation, copyright the Python Software Foundation, distributed under the PSF License Agreement.

    Topics are sorted by name and joined with a blank line; a topic is held out when the sha256 of its name is 0
    mod 10 (about a tenth of the text). Hashing the name, rather than taking every tenth topic, keeps the split of
    the other topics unchanged when a Python version adds one. Other Python versions ship other text, so
    ``sha256`` identifies it: pass the value a model was trained with as ``expected_sha256`` to get a
    :class:`CorpusMismatchError` instead of numbers that silently differ from the notebook's.
    """
    from pydoc_data.topics import topics  # half a megabyte of text: read when asked for, not on import

    names = sorted(topics)
    held = tuple(name for name in names if int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10 == 0)
    sha = hashlib.sha256("\n".join(topics[name] for name in names).encode()).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        raise CorpusMismatchError(f"this Python's ({platform.python_version()}) documentation topics have sha256 "
                                  f"{sha}, not the expected {expected_sha256}: the text differs from the one the model "
                                  "was trained on. Use the Python version named in the model card, "
                                  "or pass expected_sha256=None and retrain the teacher on this text")
    join = lambda chosen: "\n".join(topics[name] for name in names if (name in held) == chosen)
    return Corpus(join(False), join(True), sha, held)


# --- the tokenizer ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CharTokenizer:
    """A fixed character vocabulary: id 0 is the unknown character, id i + 1 is ``chars[i]`` (12_distill_language_model)."""

    chars: tuple[str, ...]

    UNKNOWN = 0
    UNKNOWN_TEXT = "\N{REPLACEMENT CHARACTER}"  # what decode shows for the unknown id

    @classmethod
    def from_text(cls, text: str, min_count: int = 5) -> CharTokenizer:
        """The characters seen at least ``min_count`` times in ``text``, sorted; rarer ones share the unknown id.

        Built from the training text only: a character met first in held-out text is unknown, as it would be for
        any text the model meets later. Merging the rare ones keeps the vocabulary at about 100 on the corpus.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counts = Counter(text)
        return cls(tuple(sorted(c for c, n in counts.items() if n >= min_count)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> torch.Tensor:
        """``text`` as a 1-D int64 tensor of ids; characters outside the vocabulary become :attr:`UNKNOWN`."""
        index = {c: i + 1 for i, c in enumerate(self.chars)}
        return torch.tensor([index.get(c, self.UNKNOWN) for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str | list[str]:
        """The text of 1-D ``ids``, or one text per row of a 2-D tensor (a batch of samples)."""
        ids = torch.as_tensor(ids)
        if ids.dim() == 2:
            return [self.decode(row) for row in ids]
        _check_ids(ids, self.vocab_size, "ids")
        table = (self.UNKNOWN_TEXT,) + self.chars
        return "".join(table[i] for i in ids.tolist())

    def to_json(self) -> str:
        return json.dumps(list(self.chars), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CharTokenizer:
        return cls(tuple(json.loads(text)))


def _check_ids(ids: torch.Tensor, vocab_size: int, name: str) -> None:
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of token ids, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise VocabularyMismatchError(f"{name} hold ids from {int(ids.min())} to {int(ids.max())}, but the vocabulary "
                                      f"has {vocab_size} tokens (0 to {vocab_size - 1}): encode the text with the "
                                      "tokenizer the model was built or saved with")


def check_same_vocabulary(expected: CharTokenizer, found: CharTokenizer, what: str = "the model") -> None:
    """Raise :class:`VocabularyMismatchError` unless ``found`` is ``expected``: ids mean other characters otherwise."""
    if expected != found:
        only_expected, only_found = set(expected.chars) - set(found.chars), set(found.chars) - set(expected.chars)
        raise VocabularyMismatchError(f"{what} uses another vocabulary ({found.vocab_size} tokens, not "
                                      f"{expected.vocab_size}; only in one: {sorted(only_expected | only_found)!r}): "
                                      "use the tokenizer load_lm returned with the teacher for every model and text")


# --- the model --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LMConfig:
    """Shape of a :class:`CharTransformer`; ``context`` is the longest sequence it reads (12_distill_language_model)."""

    vocab_size: int
    context: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 192
    dropout: float = 0.0
    tie_weights: bool = True  # the output head reuses the token embedding (fewer parameters, as in GPT-2)

    def __post_init__(self):
        if min(self.vocab_size - 1, self.context, self.n_layer, self.n_head) < 1 or self.d_model % self.n_head:
            raise ValueError(f"need vocab_size >= 2, context, n_layer and n_head >= 1, and d_model divisible by "
                             f"n_head: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)
                   for t in self.qkv(x).split(width, dim=2))
        if cache:  # keys and values of the earlier positions: only the new token is computed
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        if cache is not None:
            cache[:] = [k, v]
        # One new token may see every cached one; is_causal would align its mask to the first key instead.
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=k.shape[2] == length)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: LMConfig):
        super().__init__()
        d = config.d_model
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), CausalSelfAttention(config), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), cache))
        return x + self.drop(self.mlp(self.ln2(x)))


class CharTransformer(nn.Module):
    """A small GPT: token + position embeddings, pre-LN blocks, final LayerNorm, logits over the vocabulary.

    Introduced in 12_distill_language_model. ``model(ids)`` maps (batch, time) ids, time <= ``config.context``, to
    (batch, time, vocab) logits, the logits at position t predicting token t + 1. Initialised like GPT-2 (normal
    0.02, residual projections scaled by 1/sqrt(2 n_layer)) from the global torch seed.
    """

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        # A tied head is the embedding matrix itself, not a second module sharing it: safetensors refuses shared tensors.
        self.head = None if config.tie_weights else nn.Linear(config.d_model, config.vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids: torch.Tensor, cache: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
        """Logits of (batch, time) ``ids``; with ``cache`` (a list, empty at first) it remembers the keys and values
        of every position it has seen, so that sampling feeds one new token at a time."""
        if cache is not None and not cache:
            cache.extend([] for _ in self.blocks)
        past = cache[0][0].shape[2] if cache and cache[0] else 0
        if ids.dim() != 2 or past + ids.shape[1] > self.config.context or (past and ids.shape[1] != 1):
            raise ValueError(f"ids must be (batch, time) with time <= context {self.config.context} (one at a time "
                             f"after a cached prompt), got shape {tuple(ids.shape)} after {past} cached positions: "
                             f"feed the last {self.config.context} tokens at most")
        positions = torch.arange(past, past + ids.shape[1], device=ids.device)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[i])
        return F.linear(self.ln_f(x), self.tok_emb.weight if self.head is None else self.head.weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    # Sampling and evaluation run without dropout and gradients, then give the model back in the mode it had.
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return sha256_of(path)


def load_lm(path: str | Path, sha256: str | None = None, device: str | torch.device | None = None) -> LoadedLM:
    """The model, tokenizer and corpus hash :func:`save_lm` wrote, checked against ``sha256`` when given.

    Introduced in 12_distill_language_model. The model comes in eval mode on ``device`` (default:
    :func:`labkit.device`). A missing, damaged or altered file is a :class:`~labkit.pretrained.WeightsError`;
    ``load_corpus(expected_sha256=loaded.corpus_sha256)`` then checks that this Python has the same text.
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
    with and the sha256 of its corpus, which ``load_corpus(expected_sha256=...)`` compares with this Python's
    documentation text. ``path`` and ``sha256`` replace the shipped file and :data:`LM_TEACHER_SHA256` (tests use
    them). A missing, unpinned, damaged or altered file is a :class:`~labkit.pretrained.WeightsError`.
    """
    path = WEIGHTS_DIR / LM_TEACHER_FILE if path is None else Path(path)
    sha256 = LM_TEACHER_SHA256 if sha256 is None else sha256
    if not path.is_file():
        raise WeightsError(f"the language-model teacher {path} is missing: train it and write it with "
                           "`python benchmarks/lm_teacher.py` (about 30-40 minutes on 2 CPU cores; `--resume` "
                           "continues an interrupted run)")
    if not sha256:
        raise WeightsError(f"the language-model teacher {path} has no pinned sha256: set LM_TEACHER_SHA256 in "
                           "labkit/lm.py to the sha256 that `python benchmarks/lm_teacher.py` printed (also in "
                           "labkit/weights/lm_teacher.md)")
    return load_lm(path, sha256, device)

# --- sampling ---------------------------------------------------------------------------------------------------

def sample(model: CharTransformer, prompt: torch.Tensor, num_tokens: int, temperature: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``prompt`` followed by ``num_tokens`` sampled ids: (batch, prompt + num_tokens), or 1-D for a 1-D prompt.

    Introduced in 12_distill_language_model. Each token is drawn from ``softmax(logits / temperature)`` given the
    last ``context`` tokens; ``temperature=0`` takes the most likely token instead. The same seeded ``generator``
    gives the same samples; the draws happen on the generator's device, so a CPU generator also fixes them for a
    model on a GPU (up to the GPU's rounding of the logits). Keys and values are cached while the text fits the
    context, so each new token costs one position's forward pass; beyond it each costs a whole window's.
    """
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    greedy = temperature == 0
    if not greedy:
        temperature = check_temperature(temperature)
    single = prompt.dim() == 1
    ids = (prompt[None] if single else prompt).to(_device(model))
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(f"prompt must be 1-D or (batch, length) ids with length >= 1, got shape {tuple(prompt.shape)}")
    _check_ids(ids, model.config.vocab_size, "prompt")
    context, cache = model.config.context, []
    with _evaluating(model):
        for step in range(num_tokens):
            # Within the context the cache holds every earlier position, so only the newest token is read; past it
            # the window slides, the position embeddings shift with it, and the whole window is read afresh.
            if step == 0:
                logits = model(ids[:, -context:], cache)
            elif ids.shape[1] <= context:
                logits = model(ids[:, -1:], cache)
            else:
                logits = model(ids[:, -context:])
            logits = logits[:, -1].float()
            if greedy:
                next_ids = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                where = probs.device if generator is None else generator.device
                next_ids = torch.multinomial(probs.to(where), 1, generator=generator).to(ids.device)
            ids = torch.cat([ids, next_ids], dim=1)
    return ids[0] if single else ids


# --- the losses -------------------------------------------------------------------------------------------------

def _flatten_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, time, vocab) logits as (batch * time, vocab) rows, one per token, after checking their shapes."""
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"{name} must be a (batch, time, vocab) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}; for "
                             "(batch, classes) logits use labkit.kl_at_temperature")
    check_same_shape(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
    vocab = student_logits.shape[-1]
    return student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)


def _log_probs(student: torch.Tensor, teacher: torch.Tensor, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and (detached) teacher log-softmax at ``T``, in float32 or wider even under autocast."""
    check_logits(student, "student_logits")
    check_logits(teacher, "teacher_logits")  # finite: a masked teacher class makes KL(student || teacher) infinite
    warn_if_probabilities(student_logits=student, teacher_logits=teacher)
    dtype = torch.promote_types(student.dtype, torch.float32)
    with torch.autocast(device_type=student.device.type, enabled=False):
        return F.log_softmax(student.to(dtype) / T, dim=-1), F.log_softmax(teacher.detach().to(dtype) / T, dim=-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """KL(teacher_T || student_T) per token, averaged over batch and time (introduced in 12_distill_language_model).

    Hinton's soft term of 03_kl_divergence applied at every position: exactly :func:`labkit.kl_at_temperature` on
    the (batch * time, vocab) rows, whose "batchmean" is then a mean over tokens. Mean-seeking: the student pays
    wherever the teacher puts mass it misses. No ``T**2`` factor (multiply by it when mixing with a hard loss);
    the teacher's logits are detached.
    """
    student, teacher = _flatten_pair(student_logits, teacher_logits)
    return kl_at_temperature(student, teacher.detach(), T)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """KL(student_T || teacher_T) per token, averaged over batch and time (introduced in 12_distill_language_model).

    Mode-seeking: the expectation is under the student, so it pays for putting mass where the teacher has little
    and nothing for the teacher's modes it ignores. Used on the student's own samples (on-policy distillation, as
    in MiniLLM and GKD). Gradients flow to the student only; computed in float32 log space.
    """
    T = check_temperature(T)
    log_q, log_p = _log_probs(*_flatten_pair(student_logits, teacher_logits), T)
    return (log_q.exp() * (log_q - log_p)).sum() / len(log_q)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                    T: float = 1.0) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence per token, as in GKD (Agarwal et al. 2024, TRL's GKDTrainer).

    Introduced in 12_distill_language_model. With teacher p, student q and the mixture m = beta p + (1 - beta) q:
    ``JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m)``, averaged over batch and time; beta = 0.5 is the
    ordinary Jensen-Shannon divergence, bounded by log 2. The loss itself tends to 0 at both ends, but scaled it
    approaches the two KLs: ``JSD_beta / beta -> KL(p || q)`` (:func:`forward_kl`) as beta -> 0 and
    ``JSD_beta / (1 - beta) -> KL(q || p)`` (:func:`reverse_kl`) as beta -> 1. TRL returns those two KLs *at*
    beta = 0 and 1, a jump from the nearby values; here beta must lie strictly between, and the endpoints are
    asked for by name. Gradients flow to the student only; computed in float32 log space.
    """
    beta, T = float(beta), check_temperature(T)
    if not 0.0 < beta < 1.0:  # also rejects NaN
        raise ValueError(f"beta must lie strictly between 0 and 1, got {beta}: at beta = 0 use forward_kl, "
                         "at beta = 1 use reverse_kl (the limits JSD_beta approaches once divided by beta or 1 - beta)")
    log_q, log_p = _log_probs(*_flatten_pair(student_logits, teacher_logits), T)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    kl_pm = (log_p.exp() * (log_p - log_m)).sum()
    kl_qm = (log_q.exp() * (log_q - log_m)).sum()
    return (beta * kl_pm + (1 - beta) * kl_qm) / len(log_q)


def next_token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per token) of (batch, time, vocab) ``logits`` for the (batch, time) ``targets``.

    Introduced in 12_distill_language_model. ``targets[b, t]`` is the token that follows position t, i.e. the
    inputs shifted by one (:attr:`TokenBatch.targets`). Computed in float32 even under autocast.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (batch, time, vocab) and targets (batch, time), got shapes "
                         f"{tuple(getattr(logits, 'shape', ()))} and {tuple(targets.shape)}")
    flat = logits.reshape(-1, logits.shape[-1])
    check_logits(flat, "logits")
    _check_ids(targets, logits.shape[-1], "targets")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.cross_entropy(flat.to(torch.promote_types(flat.dtype, torch.float32)), targets.reshape(-1))


# --- evaluation -------------------------------------------------------------------------------------------------

def bits_per_character(model: CharTransformer, ids: torch.Tensor, context: int | None = None,
                       batch_size: int = 64) -> float:
    """Mean cross-entropy in bits of every character of 1-D ``ids`` but the first (introduced in 12_distill_language_model).

    The text is cut into non-overlapping windows of ``context`` predictions (default: the model's context), so
    every character is predicted once, from the characters before it in its window; the first ones of each window
    see little context, which makes this a little pessimistic, and fast. Lower is better; a model that knows
    nothing scores log2(vocab_size).
    """
    context = model.config.context if context is None else context
    if not 1 <= context <= model.config.context:
        raise ValueError(f"context must lie in [1, {model.config.context}] (the model's), got {context}")
    if ids.dim() != 1 or len(ids) < 2:
        raise ValueError(f"ids must be a 1-D tensor of at least 2 token ids, got shape {tuple(ids.shape)}")
    _check_ids(ids, model.config.vocab_size, "ids")
    ids = ids.to(_device(model))
    inputs, targets = ids[:-1], ids[1:]
    full = len(inputs) // context * context
    windows = [(inputs[:full].view(-1, context), targets[:full].view(-1, context))]
    if full < len(inputs):
        windows.append((inputs[full:][None], targets[full:][None]))
    nats = 0.0
    with _evaluating(model):
        for x, y in windows:
            for start in range(0, len(x), batch_size):
                logits = model(x[start:start + batch_size]).float()
                nats += F.cross_entropy(logits.flatten(0, 1), y[start:start + batch_size].flatten(), reduction="sum").item()
    return nats / len(targets) / math.log(2)


def distinct_ngrams(texts: str | Sequence[str], n: int = 2, unit: str = "word") -> float:
    """Distinct-n: the number of different n-grams over the number of n-grams, pooled over ``texts``.

    Introduced in 12_distill_language_model as a diversity measure of samples (Li et al. 2016): 1 when no n-gram
    repeats, near 0 for text stuck in a loop. ``unit`` is ``"word"`` (whitespace-separated) or ``"char"``;
    n-grams never span two texts. 0 when no text is long enough for one n-gram.
    """
    if n < 1 or unit not in ("word", "char"):
        raise ValueError(f"need n >= 1 and unit 'word' or 'char', got n={n}, unit={unit!r}")
    grams = []
    for text in [texts] if isinstance(texts, str) else texts:
        units = text.split() if unit == "word" else text
        grams += [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def sample_entropy(model: CharTransformer, samples: TokenBatch) -> float:
    """Mean entropy in bits of ``model``'s next-token distribution at the sampled positions of ``samples``.

    Introduced in 12_distill_language_model: pass the model's own samples (:func:`batch_from_model_samples`) to
    see how sure it is of the text it writes. Mode-seeking students score lower than mean-seeking ones.
    """
    with _evaluating(model):
        logits = model(samples.inputs.to(_device(model)))[:, samples.first_target:].float()
    return entropy(torch.softmax(logits, dim=-1)).mean().item()


# --- training -----------------------------------------------------------------------------------------------------

class TokenBatch(NamedTuple):
    """(batch, length + 1) token ``tokens``; the loss counts targets from index ``first_target`` on (a prompt's are not)."""

    tokens: torch.Tensor
    first_target: int = 0

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.tokens[:, 1:]


def batch_from_corpus(ids: torch.Tensor, batch_size: int, context: int, generator: torch.Generator) -> TokenBatch:
    """``batch_size`` windows of ``context + 1`` tokens at random places of 1-D ``ids`` (12_distill_language_model).

    Off-policy text: the corpus itself, whoever is being trained on it.
    """
    if ids.dim() != 1 or len(ids) < context + 1:
        raise ValueError(f"ids must be 1-D and hold at least context + 1 = {context + 1} tokens, got shape "
                         f"{tuple(ids.shape)}")
    starts = torch.randint(0, len(ids) - context, (batch_size, 1), generator=generator, device=generator.device)
    return TokenBatch(ids[(starts + torch.arange(context + 1, device=starts.device)).to(ids.device)])


def batch_from_model_samples(model: CharTransformer, prompts_from: torch.Tensor, batch_size: int, context: int,
                             generator: torch.Generator, prompt_length: int = 8,
                             temperature: float = 1.0) -> TokenBatch:
    """Text written by ``model``: ``prompt_length`` corpus tokens, then its samples up to ``context + 1`` tokens.

    Introduced in 12_distill_language_model. With the student as ``model`` this is on-policy data (the student
    learns on its own mistakes); with the teacher, sequence-level KD. The prompts are random windows of
    ``prompts_from`` (the training ids) and are excluded from the loss (``first_target``).
    """
    if not 1 <= prompt_length <= context:
        raise ValueError(f"prompt_length must lie in [1, context={context}], got {prompt_length}")
    prompts = batch_from_corpus(prompts_from, batch_size, prompt_length - 1, generator).tokens
    tokens = sample(model, prompts, context + 1 - prompt_length, temperature, generator)
    return TokenBatch(tokens, first_target=prompt_length - 1)


Objective = Callable[[nn.Module, TokenBatch], torch.Tensor]


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
    run = {"train": asdict(config), "model": asdict(model.config), "compute": {"precision": computed_in}}
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
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done,
                               "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                               "history": history.rows, "interval": interval, "run": run}, checkpoint)
            history.to_csv(Path(out) / "history.csv")
        if on_step is not None:
            on_step(done)
    return history


def _read_checkpoint(path: Path, run: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = {"compute": {"precision": settings.LEGACY_PRECISION}, **state["run"]}  # older ones lack it
    except Exception as err:
        raise ResumeError(f"the checkpoint {path} cannot be read ({type(err).__name__}: {err}); delete it to train "
                          "from scratch, or pass another out=") from None
    if saved != run:
        differ = sorted(f"{part}.{k}" for part in run for k in run[part] if saved.get(part, {}).get(k) != run[part][k])
        raise ResumeError(f"the checkpoint {path} was written with other settings ({', '.join(differ)}); resume with "
                          "the checkpoint's settings, or pass another out= for a new run")
    return state


# --- the experiment of 12_distill_language_model ------------------------------------------------------------------

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


def batch_from_rows(rows: TokenBatch, batch_size: int, generator: torch.Generator) -> TokenBatch:
    """``batch_size`` rows of a fixed data set (e.g. :func:`model_text`'s), drawn at random with replacement.

    Introduced in 12_distill_language_model; the rows keep their ``first_target``, so prompts stay out of the loss.
    """
    index = torch.randint(0, len(rows.tokens), (batch_size,), generator=generator, device=generator.device)
    return TokenBatch(rows.tokens[index.to(rows.tokens.device)], rows.first_target)


def text_windows(ids: torch.Tensor, context: int) -> TokenBatch:
    """1-D ``ids`` cut into consecutive windows of ``context`` predictions: row i is tokens ``i * context`` to
    ``(i + 1) * context`` inclusive, so every token but the first is a target once (a shorter last window is
    dropped). Introduced in 12_distill_language_model, to score several models on the very same positions."""
    if ids.dim() != 1 or context < 1 or len(ids) < context + 1:
        raise ValueError(f"ids must be 1-D with at least context + 1 = {context + 1} tokens, got shape "
                         f"{tuple(ids.shape)}")
    rows = (len(ids) - 1) // context
    return TokenBatch(ids[torch.arange(rows)[:, None] * context + torch.arange(context + 1)])


def window_logits(model: CharTransformer, windows: TokenBatch, batch_size: int = 64) -> torch.Tensor:
    """``model``'s float32 logits at every input position of ``windows``: (rows, context, vocab), on the CPU.

    Introduced in 12_distill_language_model: the teacher's are computed once and compared with every student's.
    """
    with _evaluating(model):
        return torch.cat([model(windows.inputs[s:s + batch_size].to(_device(model))).float().cpu()
                          for s in range(0, len(windows.tokens), batch_size)])


def compare_to_teacher(model: CharTransformer, windows: TokenBatch, teacher_logits: torch.Tensor) -> dict[str, float]:
    """Bits per character of ``model`` on ``windows``, and its forward and reverse KL to the teacher there, in bits.

    Introduced in 12_distill_language_model. ``teacher_logits`` are :func:`window_logits` of the teacher on the
    same windows. ``bits_per_character`` is the cross-entropy with the text's next characters (no teacher);
    ``forward_kl`` is KL(teacher || model) and ``reverse_kl`` KL(model || teacher), each per position, averaged
    over every position of the windows.
    """
    logits = window_logits(model, windows)
    check_same_shape(logits, teacher_logits, ("model logits", "teacher_logits"))
    ln2 = math.log(2)
    return {"bits_per_character": next_token_cross_entropy(logits, windows.targets).item() / ln2,
            "forward_kl": forward_kl(logits, teacher_logits).item() / ln2,
            "reverse_kl": reverse_kl(logits, teacher_logits).item() / ln2}
