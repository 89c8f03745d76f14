"""The language-model teacher of 12_distill_language_model: benchmarks/lm_teacher.py end to end on a tiny model,
load_lm_teacher's checks, and (once it has been trained) the shipped file's hash and held-out score."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from labkit import lm
from labkit.lm import LM_TEACHER_FILE, LM_TEACHER_SHA256, load_lm_teacher
from labkit.pretrained import WEIGHTS_DIR, WeightsError, sha256_of
from labkit.settings import QUICK_ENV

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import lm_teacher  # noqa: E402  (benchmarks/lm_teacher.py)

SHIPPED = WEIGHTS_DIR / LM_TEACHER_FILE
TINY = dict(context=16, n_layer=1, n_head=2, d_model=16)


def tiny_run(tmp_path: Path, **kwargs) -> dict:
    config = lm.LMTrainConfig(steps=6, warmup_steps=2, log_every=3, checkpoint_every=3)
    return lm_teacher.train_teacher(TINY, config, 4, run_dir=tmp_path / "run", weights=tmp_path / "w.safetensors",
                                    card=tmp_path / "card.md", results=tmp_path / "r.json", progress=False,
                                    eval_chars=500, **kwargs)


def test_quick_mode_runs_end_to_end_and_never_writes_the_shipped_file(tmp_path, monkeypatch):
    monkeypatch.setattr(lm_teacher, "ROOT", tmp_path)
    monkeypatch.setenv(QUICK_ENV, "1")  # main() sets it; monkeypatch restores the old value afterwards
    before = SHIPPED.stat().st_mtime_ns if SHIPPED.exists() else None
    payload = lm_teacher.main(["--quick", "--no-progress"])
    assert (SHIPPED.stat().st_mtime_ns if SHIPPED.exists() else None) == before
    run = tmp_path / "runs" / "lm_teacher_quick"
    weights, card = run / "lm_teacher_quick.safetensors", run / "lm_teacher_quick.md"
    assert json.loads((tmp_path / "benchmarks" / "results" / "lm_teacher_quick.json").read_text()) == payload
    assert payload["sha256"] == sha256_of(weights) and (run / "checkpoint.pt").is_file()
    assert payload["train"]["steps"] == lm_teacher.QUICK_TRAIN.steps and payload["command"].endswith("--quick")
    assert math.isfinite(payload["held_out_bpc"]) and payload["held_out_bpc"] < payload["uniform_bpc"]
    text = card.read_text()
    assert payload["sha256"] in text and "PSF License" in text and payload["corpus"]["sha256"] in text
    loaded = load_lm_teacher("cpu", path=weights, sha256=payload["sha256"])
    assert loaded.tokenizer.vocab_size == payload["vocab_size"] and loaded.corpus_sha256 == payload["corpus"]["sha256"]
    assert not loaded.model.training


def test_a_resumed_finished_run_writes_the_same_file_and_keeps_its_wall_time(tmp_path):
    first = tiny_run(tmp_path)
    assert [row["step"] for row in first["history"]] == [3, 6]
    assert first["wall_time_parts"] == 1 and first["wall_time_exact"] and first["wall_seconds"] > 0
    again = tiny_run(tmp_path, resume=True)  # the checkpoint is at the last step: nothing left to train
    assert again["sha256"] == first["sha256"] and again["history"] == first["history"]
    assert again["wall_seconds"] == first["wall_seconds"]
    assert again["held_out_bpc"] == first["held_out_bpc"]


def test_load_lm_teacher_refuses_missing_unpinned_and_tampered_files(tmp_path):
    with pytest.raises(WeightsError, match=r"missing.*python benchmarks/lm_teacher\.py"):
        load_lm_teacher(path=tmp_path / "nope.safetensors", sha256="0" * 64)
    tok = lm.CharTokenizer.from_text("abcabc", 1)
    path = tmp_path / "t.safetensors"
    sha = lm.save_lm(lm.CharTransformer(lm.LMConfig(tok.vocab_size, **TINY)), tok, path)
    assert load_lm_teacher("cpu", path=path, sha256=sha).tokenizer == tok
    with pytest.raises(WeightsError, match="LM_TEACHER_SHA256"):
        load_lm_teacher(path=path, sha256="")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged or altered"):
        load_lm_teacher(path=path, sha256=sha)


@pytest.mark.skipif(not SHIPPED.exists(), reason="not trained yet: run `python benchmarks/lm_teacher.py`")
def test_shipped_teacher_matches_its_pin_and_its_held_out_score():
    assert LM_TEACHER_SHA256, "pin the sha256 that benchmarks/lm_teacher.py printed in labkit/lm/store.py"
    assert sha256_of(SHIPPED) == LM_TEACHER_SHA256 and SHIPPED.stat().st_size <= 4 * 2**20
    recorded = json.loads((ROOT / "benchmarks" / "results" / "lm_teacher.json").read_text())
    assert recorded["sha256"] == LM_TEACHER_SHA256
    teacher = load_lm_teacher("cpu")
    corpus = lm.load_corpus(expected_sha256=teacher.corpus_sha256)
    bpc = lm.bits_per_character(teacher.model, teacher.tokenizer.encode(corpus.held_out))
    assert bpc == pytest.approx(recorded["held_out_bpc"], abs=1e-3)
    assert bpc < min(3.0, recorded["unigram_bpc"] - 0.5), "the shipped teacher should predict far better than letter counts"
