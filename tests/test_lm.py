"""Tests for labkit.lm (12_distill_language_model): the token-level losses against independent oracles, the corpus,
tokenizer, sampling, saving, and a training loop that learns and resumes exactly.

The losses are compared with numpy/scipy float64 computations that share no code with labkit, on random logits
drawn by hypothesis; every model here is tiny, so the file runs in seconds on a CPU.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import rel_entr

from labkit import lm
from labkit.atomic import DamagedFileError
from labkit.distillation import kl_at_temperature
from labkit.lm import corpus as corpus_module
from labkit.pretrained import WeightsError
from labkit.train import ResumeError
from labkit.validate import NonFiniteLogitsError

PROPERTY = settings(max_examples=20, deadline=None)
# Random logits sometimes happen to be one-hot rows of 0 and 1, which the loss rightly warns look like probabilities.
pytestmark = pytest.mark.filterwarnings("ignore::labkit.validate.LooksLikeProbabilitiesWarning")
TEXT = "the cat sat on the mat. the dog sat on the log. "


@st.composite
def logit_pairs(draw: st.DrawFn, max_abs: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Student and teacher logits of shape (batch, time, vocab), float64."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(2, 7)))
    finite = st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False)
    return draw(hnp.arrays(np.float64, shape, elements=finite)), draw(hnp.arrays(np.float64, shape, elements=finite))


def tokens_distributions(student: np.ndarray, teacher: np.ndarray, T: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, vocab) probabilities q (student) and p (teacher), by scipy."""
    vocab = student.shape[-1]
    q = np.exp(scipy_log_softmax(student.reshape(-1, vocab) / T, axis=1))
    p = np.exp(scipy_log_softmax(teacher.reshape(-1, vocab) / T, axis=1))
    return q, p


def loop_jsd(q: np.ndarray, p: np.ndarray, beta: float) -> float:
    """Generalized JSD as explicit float64 sums over tokens and vocabulary."""
    total = 0.0
    for q_row, p_row in zip(q, p):
        m = beta * p_row + (1 - beta) * q_row
        total += sum(beta * pi * math.log(pi / mi) for pi, mi in zip(p_row, m) if pi > 0)
        total += sum((1 - beta) * qi * math.log(qi / mi) for qi, mi in zip(q_row, m) if qi > 0)
    return total / len(q)


def t64(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)


def tiny_model(vocab: int = 12, context: int = 16, **kwargs) -> lm.CharTransformer:
    torch.manual_seed(0)
    return lm.CharTransformer(lm.LMConfig(vocab, context=context, n_layer=1, n_head=2, d_model=16, **kwargs))


@pytest.fixture(scope="module")
def corpus() -> lm.Corpus:
    return lm.load_corpus()


# --- losses --------------------------------------------------------------------------------------------------

@PROPERTY
@given(logit_pairs(), st.floats(0.5, 8.0))
def test_forward_kl_is_kl_at_temperature_over_tokens(pair, T):
    s, t = map(t64, pair)
    vocab = s.shape[-1]
    expected = F.kl_div(F.log_softmax(s.reshape(-1, vocab) / T, 1), F.log_softmax(t.reshape(-1, vocab) / T, 1),
                        reduction="batchmean", log_target=True)
    got = lm.forward_kl(s, t, T)
    assert torch.allclose(got, kl_at_temperature(s.reshape(-1, vocab), t.reshape(-1, vocab), T), rtol=0, atol=0)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)
    q, p = tokens_distributions(*pair, T)
    assert got.item() == pytest.approx(rel_entr(p, q).sum(1).mean(), rel=1e-7, abs=1e-10)


@PROPERTY
@given(logit_pairs(), st.floats(0.5, 8.0))
def test_reverse_kl_matches_scipy(pair, T):
    q, p = tokens_distributions(*pair, T)
    got = lm.reverse_kl(*map(t64, pair), T=T).item()
    assert got == pytest.approx(rel_entr(q, p).sum(1).mean(), rel=1e-7, abs=1e-10)


@PROPERTY
@given(logit_pairs(), st.floats(0.05, 0.95))
def test_generalized_jsd_matches_explicit_sums(pair, beta):
    q, p = tokens_distributions(*pair)
    got = lm.generalized_jsd(*map(t64, pair), beta=beta).item()
    assert got == pytest.approx(loop_jsd(q, p, beta), rel=1e-7, abs=1e-10)


@PROPERTY
@given(logit_pairs(max_abs=60.0))
def test_jsd_at_one_half_is_scipys_jensen_shannon_and_bounded_by_log_2(pair):
    q, p = tokens_distributions(*pair)
    got = lm.generalized_jsd(*map(t64, pair), beta=0.5).item()
    # scipy returns the Jensen-Shannon *distance*: the square root of the divergence, in nats by default.
    assert got == pytest.approx((jensenshannon(p, q, axis=1) ** 2).mean(), rel=1e-6, abs=1e-9)
    assert -1e-12 <= got <= math.log(2) + 1e-12


def test_jsd_reaches_log_2_for_disjoint_distributions():
    s = torch.tensor([[[100.0, -100.0]]])
    assert lm.generalized_jsd(s, -s, beta=0.5).item() == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jsd_divided_by_its_weight_approaches_the_kls_at_the_ends(seed):
    gen = torch.Generator().manual_seed(seed)
    s, t = (3 * torch.randn(2, 3, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    forward, reverse = lm.forward_kl(s, t).item(), lm.reverse_kl(s, t).item()
    # The error shrinks like beta (1 - beta) near each end; its constant grows where p/q is large, hence tiny betas.
    near_0 = [abs(lm.generalized_jsd(s, t, beta=eps).item() / eps / forward - 1) for eps in (1e-6, 1e-8)]
    near_1 = [abs(lm.generalized_jsd(s, t, beta=1 - eps).item() / eps / reverse - 1) for eps in (1e-6, 1e-8)]
    for coarse, fine in (near_0, near_1):
        assert fine < 1e-4 and fine < coarse / 50


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_jsd_refuses_beta_outside_the_open_interval_and_names_the_kls(beta):
    s = torch.randn(1, 2, 3)
    with pytest.raises(ValueError, match="forward_kl.*reverse_kl"):
        lm.generalized_jsd(s, s, beta=beta)


@pytest.mark.parametrize("loss", [lm.reverse_kl, functools.partial(lm.generalized_jsd, beta=0.3)])
def test_gradients_are_right_and_reach_the_student_only(loss):
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, T=2.0), (s,))
    loss(s, t).backward()
    assert t.grad is None and s.grad is not None


def test_losses_are_float32_for_half_precision_logits():
    s, t = torch.randn(2, 3, 5).bfloat16(), torch.randn(2, 3, 5).bfloat16()
    for loss in (lm.forward_kl, lm.reverse_kl, lm.generalized_jsd):
        assert loss(s, t).dtype == torch.float32
    assert lm.next_token_cross_entropy(s, torch.zeros(2, 3, dtype=torch.long)).dtype == torch.float32


def test_losses_want_3d_logits_and_finite_values():
    with pytest.raises(ValueError, match="batch, time, vocab.*kl_at_temperature"):
        lm.reverse_kl(torch.randn(4, 5), torch.randn(4, 5))
    with pytest.raises(ValueError, match="same shape"):
        lm.forward_kl(torch.randn(1, 4, 5), torch.randn(1, 3, 5))
    with pytest.raises(lm.VocabularyMismatchError, match="one vocabulary"):
        lm.forward_kl(torch.randn(1, 4, 5), torch.randn(1, 4, 6))
    bad = torch.randn(1, 2, 3)
    bad[0, 1, 2] = float("nan")
    with pytest.raises(NonFiniteLogitsError):
        lm.generalized_jsd(bad, torch.randn(1, 2, 3))


@PROPERTY
@given(logit_pairs(), st.data())
def test_next_token_cross_entropy_matches_numpy(pair, data):
    logits = pair[0]
    targets = data.draw(hnp.arrays(np.int64, logits.shape[:2], elements=st.integers(0, logits.shape[2] - 1)))
    expected = -np.take_along_axis(scipy_log_softmax(logits, axis=2), targets[..., None], axis=2).mean()
    got = lm.next_token_cross_entropy(t64(logits), t64(targets)).item()
    assert got == pytest.approx(expected, rel=1e-7, abs=1e-10)


def test_targets_outside_the_vocabulary_are_a_vocabulary_mismatch():
    with pytest.raises(lm.VocabularyMismatchError, match="tokenizer"):
        lm.next_token_cross_entropy(torch.randn(1, 2, 3), torch.tensor([[0, 3]]))


# --- corpus and tokenizer ---------------------------------------------------------------------------------------

def shipped_topics() -> dict[str, str]:
    return json.loads(gzip.decompress(corpus_module.TOPICS.read_bytes()))


def test_corpus_split_is_deterministic_disjoint_and_about_nine_to_one(corpus):
    topics = shipped_topics()
    again = lm.load_corpus()
    assert again == corpus and len(corpus.sha256) == 64
    assert 0.05 < len(corpus.held_out) / (len(corpus.train) + len(corpus.held_out)) < 0.15
    for name in corpus.held_out_topics:
        assert topics[name] in corpus.held_out and topics[name] not in corpus.train
    assert all(topics[name] in corpus.train for name in set(topics) - set(corpus.held_out_topics))


def test_another_corpus_is_refused(corpus):
    assert lm.load_corpus(expected_sha256=corpus.sha256) == corpus
    with pytest.raises(lm.CorpusMismatchError, match="labkit version"):
        lm.load_corpus(expected_sha256="0" * 64)


@pytest.mark.skipif(platform.python_version() != "3.11.7", reason="the shipped text is Python 3.11.7's")
def test_the_shipped_corpus_is_python_3_11_7s_documentation():
    from pydoc_data.topics import topics

    assert shipped_topics() == topics


def test_a_damaged_corpus_file_is_refused(tmp_path, monkeypatch):
    topics = shipped_topics()
    topics["for"] = topics["for"].replace("for", "fur", 1)
    damaged = tmp_path / "topics.json.gz"
    damaged.write_bytes(gzip.compress(json.dumps(topics).encode()))
    monkeypatch.setattr(corpus_module, "TOPICS", damaged)
    with pytest.raises(DamagedFileError, match="reinstall labkit"):
        lm.load_corpus()


def test_tokenizer_round_trip_and_unknown_characters(corpus):
    tok = lm.CharTokenizer.from_text(corpus.train)
    assert 80 <= tok.vocab_size <= 120
    sample = corpus.train[:5000]
    assert tok.decode(tok.encode(sample)) == "".join(c if c in tok.chars else tok.UNKNOWN_TEXT for c in sample)
    assert tok.encode("a\u00b0b").tolist() == [tok.encode("a").item(), tok.UNKNOWN, tok.encode("b").item()]
    assert lm.CharTokenizer.from_json(tok.to_json()) == tok
    assert tok.decode(tok.encode("ab").repeat(2, 1)) == ["ab", "ab"]


def test_another_vocabulary_is_refused():
    with pytest.raises(lm.VocabularyMismatchError, match="load_lm"):
        lm.check_same_vocabulary(lm.CharTokenizer.from_text("abc", 1), lm.CharTokenizer.from_text("abd", 1))
    with pytest.raises(lm.VocabularyMismatchError, match="tokenizer"):
        lm.CharTokenizer.from_text("abc", 1).decode([7])


# --- model, sampling, saving ------------------------------------------------------------------------------------

def test_model_shapes_and_cached_logits_match_the_full_pass():
    model = tiny_model().eval()
    ids = torch.randint(0, 12, (3, 16))
    full = model(ids)
    assert full.shape == (3, 16, 12)
    cache: list = []
    stepwise = [model(ids[:, :4], cache)] + [model(ids[:, i:i + 1], cache) for i in range(4, 16)]
    assert torch.allclose(torch.cat(stepwise, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="context 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_sampling_is_reproducible_for_a_seed_and_differs_for_another():
    model = tiny_model()
    prompt = torch.randint(0, 12, (4, 3), generator=torch.Generator().manual_seed(0))
    draw = lambda seed, n=30: lm.sample(model, prompt, n, generator=torch.Generator().manual_seed(seed))
    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (4, 33) and torch.equal(a[:, :3], prompt)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.training  # sample() gives the model back in the mode it had
    assert lm.sample(model, prompt[0], 5, temperature=0).shape == (8,)
    assert torch.equal(lm.sample(model, prompt, 5, temperature=0), lm.sample(model, prompt, 5, temperature=0))


def test_save_and_load_keep_model_vocabulary_and_corpus(tmp_path):
    tok = lm.CharTokenizer.from_text(TEXT, 1)
    model = tiny_model(tok.vocab_size).eval()
    path = tmp_path / "lm.safetensors"
    sha = lm.save_lm(model, tok, path, corpus_sha256="abc")
    loaded = lm.load_lm(path, sha)
    assert loaded.tokenizer == tok and loaded.corpus_sha256 == "abc" and loaded.model.config == model.config
    ids = tok.encode(TEXT[:16])[None]
    assert torch.allclose(loaded.model(ids), model(ids), atol=2e-2)  # stored as float16
    with pytest.raises(WeightsError, match="damaged or altered"):
        lm.load_lm(path, "0" * 64)
    with pytest.raises(lm.VocabularyMismatchError):
        lm.save_lm(model, lm.CharTokenizer.from_text("ab", 1), path)


# --- evaluation -------------------------------------------------------------------------------------------------

def test_bits_per_character_of_a_uniform_model_is_log2_vocab_and_matches_a_direct_sum():
    model = tiny_model(context=8)
    ids = torch.randint(0, 12, (30,), generator=torch.Generator().manual_seed(0))
    model.eval()
    windows = [(ids[:-1][i:i + 8], ids[1:][i:i + 8]) for i in range(0, 29, 8)]  # the last window is 5 long
    nats = sum(F.cross_entropy(model(x[None])[0], y, reduction="sum").item() for x, y in windows)
    assert lm.bits_per_character(model, ids, batch_size=2) == pytest.approx(nats / 29 / math.log(2), rel=1e-5)
    with torch.no_grad():
        model.tok_emb.weight.zero_()  # tied head: every logit becomes 0
    assert lm.bits_per_character(model, ids) == pytest.approx(math.log2(12), rel=1e-6)
    samples = lm.TokenBatch(ids[:9][None])
    assert lm.sample_entropy(model, samples) == pytest.approx(math.log2(12), rel=1e-6)


def test_distinct_ngrams():
    assert lm.distinct_ngrams("a b a b", 2) == pytest.approx(2 / 3)
    assert lm.distinct_ngrams(["a b", "b a"], 2) == 1.0  # n-grams do not span texts
    assert lm.distinct_ngrams("aaaa", 1, unit="char") == 0.25
    assert lm.distinct_ngrams("a", 2) == 0.0


def test_model_samples_batch_excludes_the_prompt_from_the_loss():
    model = tiny_model()
    corpus_ids = torch.randint(0, 12, (100,))
    batch = lm.batch_from_model_samples(model, corpus_ids, 3, 10, torch.Generator().manual_seed(0), prompt_length=4)
    assert batch.tokens.shape == (3, 11) and batch.first_target == 3
    assert batch.inputs.shape == batch.targets.shape == (3, 10)
    objective = lm.teacher_objective(tiny_model(), lm.reverse_kl)
    assert torch.isfinite(objective(model, batch))


# --- training ---------------------------------------------------------------------------------------------------

def test_a_tiny_model_learns_a_tiny_text():
    tok = lm.CharTokenizer.from_text(TEXT, 1)
    ids = tok.encode(TEXT * 4)
    model = tiny_model(tok.vocab_size)
    before = lm.bits_per_character(model, ids)
    history = lm.train_lm(model, lambda g: lm.batch_from_corpus(ids, 16, 16, g), lm.ce_objective,
                          steps=80, lr=1e-2, warmup_steps=5, log_every=20, progress=False)
    assert before > 3.5 and lm.bits_per_character(model, ids) < 1.2
    assert history["step"] == [20, 40, 60, 80] and history["loss"][-1] < history["loss"][0]


def test_resume_after_interrupt_reproduces_the_uninterrupted_run(tmp_path):
    tok = lm.CharTokenizer.from_text(TEXT, 1)
    ids = tok.encode(TEXT * 2)
    teacher = tiny_model(tok.vocab_size)
    objective = lm.teacher_objective(teacher, functools.partial(lm.generalized_jsd, beta=0.5))

    def run(out, **kwargs):
        model = tiny_model(tok.vocab_size, dropout=0.1)  # dropout: the saved torch RNG matters too
        torch.manual_seed(5)
        batches = lambda g: lm.batch_from_model_samples(model, ids, 4, 12, g, prompt_length=2)
        history = lm.train_lm(model, batches, objective, steps=6, warmup_steps=2, log_every=2, checkpoint_every=3,
                              out=out, progress=False, **kwargs)
        return model, history

    reference, ref_history = run(tmp_path / "a")

    def interrupt(step):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", on_step=interrupt)
    steps_taken = []
    resumed, res_history = run(tmp_path / "b", resume=True, on_step=steps_taken.append)
    assert steps_taken == [4, 5, 6]  # from the checkpoint of step 3, not from scratch
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()))
    untimed = lambda h: [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in h.rows]
    assert untimed(res_history) == untimed(ref_history)
    with pytest.raises(ResumeError, match="train.lr"):
        lm.train_lm(tiny_model(tok.vocab_size, dropout=0.1), lambda g: lm.batch_from_corpus(ids, 4, 12, g),
                    lm.ce_objective, steps=6, lr=1.0, out=tmp_path / "b", resume=True, progress=False)
    for other in (lm.teacher_objective(teacher, lm.reverse_kl), lm.ce_objective,
                  lm.teacher_objective(teacher, functools.partial(lm.generalized_jsd, beta=0.9))):
        with pytest.raises(ResumeError, match="objective.name"):  # another loss is another run
            lm.train_lm(tiny_model(tok.vocab_size, dropout=0.1), lambda g: lm.batch_from_corpus(ids, 4, 12, g),
                        other, steps=6, warmup_steps=2, log_every=2, checkpoint_every=3, out=tmp_path / "b",
                        resume=True, progress=False)


def test_the_same_model_saves_to_the_same_bytes(tmp_path):
    tok = lm.CharTokenizer.from_text(TEXT, 1)
    model = tiny_model(tok.vocab_size)
    shas = {lm.save_lm(model, tok, tmp_path / f"{i}.safetensors", corpus_sha256="abc") for i in range(4)}
    assert len(shas) == 1  # safetensors orders several metadata entries at random: save_lm writes one


# --- the experiment of 12_distill_language_model -----------------------------------------------------------------

def test_model_text_is_a_fixed_reproducible_data_set_of_model_rows():
    model = tiny_model()
    ids = torch.randint(0, 12, (200,), generator=torch.Generator().manual_seed(0))
    make = lambda seed: lm.model_text(model, ids, 10, 12, torch.Generator().manual_seed(seed), prompt_length=3,
                                      batch_size=4, progress=False)
    rows = make(0)
    assert rows.tokens.shape == (10, 13) and rows.first_target == 2
    assert torch.equal(rows.tokens, make(0).tokens) and not torch.equal(rows.tokens, make(1).tokens)
    starts = [i for i in range(len(ids) - 2) if torch.equal(ids[i:i + 3], rows.tokens[0, :3])]
    assert starts, "each row starts with a prompt from the corpus"
    batch = lm.batch_from_rows(rows, 6, torch.Generator().manual_seed(0))
    assert batch.tokens.shape == (6, 13) and batch.first_target == 2
    assert all(any(torch.equal(r, s) for s in rows.tokens) for r in batch.tokens)


def test_text_windows_cover_every_target_once_as_bits_per_character_reads_them():
    ids = torch.arange(30) % 12
    windows = lm.text_windows(ids, 8)
    assert windows.tokens.shape == (3, 9)  # 29 predictions: 3 full windows of 8, the last 5 dropped
    assert torch.equal(windows.targets.flatten(), ids[1:25]) and torch.equal(windows.inputs.flatten(), ids[:24])
    with pytest.raises(ValueError, match="context \\+ 1"):
        lm.text_windows(ids[:5], 8)


def test_compare_to_teacher_matches_direct_computations():
    student, teacher = tiny_model(context=8), tiny_model(context=16)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ids = torch.randint(0, 12, (41,), generator=torch.Generator().manual_seed(0))
    windows = lm.text_windows(ids, 8)
    teacher_logits = lm.window_logits(teacher, windows, batch_size=2)
    assert teacher_logits.shape == (5, 8, 12) and teacher_logits.dtype == torch.float32
    scores = lm.compare_to_teacher(student, windows, teacher_logits)
    assert scores["bits_per_character"] == pytest.approx(lm.bits_per_character(student, ids), rel=1e-5)
    q, p = (torch.softmax(m.eval()(windows.inputs).double(), -1) for m in (student, teacher))
    kl = lambda a, b: (a * (a / b).log()).sum(-1).mean().item() / math.log(2)
    assert scores["forward_kl"] == pytest.approx(kl(p, q), rel=1e-4)
    assert scores["reverse_kl"] == pytest.approx(kl(q, p), rel=1e-4)
    assert lm.compare_to_teacher(teacher, windows, teacher_logits)["forward_kl"] == pytest.approx(0, abs=1e-6)


def test_distill_budget_is_smaller_in_quick_mode(monkeypatch):
    monkeypatch.setenv("LABKIT_QUICK", "0")
    full = lm.distill_budget()
    monkeypatch.setenv("LABKIT_QUICK", "1")
    quick = lm.distill_budget()
    assert quick.steps < full.steps and quick.positions_per_arm < full.positions_per_arm
    config = full.train_config(seed=3)
    assert config.steps == full.steps and config.seed == 3 and config.warmup_steps == full.steps // 10
    assert full.train_config(steps=40).warmup_steps == 4
    assert full.student_config(101).context == full.context


def test_on_policy_metrics_read_the_models_own_text_through_the_teacher():
    model = tiny_model()
    torch.manual_seed(1)  # another teacher
    teacher = lm.CharTransformer(lm.LMConfig(12, context=16, n_layer=1, n_head=2, d_model=16))
    ids = torch.randint(1, 12, (200,), generator=torch.Generator().manual_seed(2))
    samples = lm.batch_from_model_samples(model, ids, 4, 16, torch.Generator().manual_seed(3), prompt_length=5)
    m = lm.on_policy_metrics(model, teacher, samples)
    k, targets = samples.first_target, samples.targets[:, samples.first_target:]
    with torch.no_grad():
        log_q = torch.log_softmax(model(samples.inputs)[:, k:], -1)
        log_p = torch.log_softmax(teacher(samples.inputs)[:, k:], -1)
    bits = lambda log: -log.gather(-1, targets[..., None]).mean().item() / math.log(2)  # noqa: E731
    assert m["teacher_bits_per_character"] == pytest.approx(bits(log_p), rel=1e-5)
    assert m["model_bits_per_character"] == pytest.approx(bits(log_q), rel=1e-5)
    kl = lambda a, b: (a.exp() * (a - b)).sum(-1).mean().item() / math.log(2)  # noqa: E731
    assert (m["reverse_kl"], m["forward_kl"]) == (pytest.approx(kl(log_q, log_p), rel=1e-5),
                                                  pytest.approx(kl(log_p, log_q), rel=1e-5))
    same = lm.on_policy_metrics(model, model, samples)
    assert same["reverse_kl"] == pytest.approx(0, abs=1e-6) and same["forward_kl"] == pytest.approx(0, abs=1e-6)
