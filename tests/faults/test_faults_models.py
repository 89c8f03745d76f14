"""Fault kinds of models: labkit.compress, labkit.models (eager inputs), labkit.lowrank, labkit.lm, labkit.lm.hf."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from labkit import lm, models
from labkit.atomic import DamagedFileError
from labkit.compress import (OnnxModel, export_onnx, prune_channels, prune_unstructured, quantize_onnx_int8,
                             reestimate_batchnorm, sensitivity_scan)
from labkit.lm import corpus as corpus_module
from labkit.lm import store as store_module
from labkit.lowrank import LowRankError, factorize, factorize_linear, rank_for_energy, singular_values
from labkit.models import InputRangeWarning
from labkit.pretrained import WeightsError
from labkit.train import NonFiniteLossError, ResumeError

fault = pytest.mark.fault
TEXT = "the cat sat on the mat. the dog sat on the log. "


# --- labkit.compress: the eager model and its ONNX Runtime forms (fp32, int8) ------------------------------------
# torch.compile'd forms (compile_fp32, compile_int8) and the PT2E int8 model are left out: quantize_pt2e alone takes
# ~20 s on this CPU even for an 8-channel network, past the file's budget.


@pytest.fixture(scope="module")
def tiny_cnn() -> models.CifarNet:
    torch.manual_seed(0)
    return models.CifarNet((8, 8, 8), stem_width=8, whiten=False).eval()


@pytest.fixture(scope="module")
def onnx_files(tiny_cnn, tmp_path_factory) -> tuple[Path, Path]:
    # Exported into folders that do not exist yet: test_export_into_a_missing_folder_creates_it reads this file.
    folder = tmp_path_factory.mktemp("onnx") / "not" / "yet"
    fp32 = export_onnx(tiny_cnn, folder / "tiny.onnx")
    calibration = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return fp32, quantize_onnx_int8(fp32, calibration, folder / "tiny_int8.onnx")


@pytest.fixture(scope="module")
def engines(tiny_cnn, onnx_files) -> dict[str, nn.Module]:
    return {"eager": tiny_cnn, "onnx_fp32": OnnxModel(onnx_files[0]), "onnx_int8": OnnxModel(onnx_files[1])}


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@fault("labkit.compress", "handled")
def test_export_into_a_missing_folder_creates_it(tiny_cnn, onnx_files):
    assert onnx_files[0].is_file() and onnx_files[0].parent.name == "yet"
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(onnx_files[0])(x), tiny_cnn(x), atol=1e-5, rtol=1e-5)


@fault("labkit.models", "warning")
def test_float_images_in_0_255_reach_the_eager_model_with_a_warning(tiny_cnn):
    x = images() * 255
    with pytest.warns(InputRangeWarning, match=r"range from .* to 25\d.*divide 0\.\.255 floats by 255"):
        with torch.no_grad():
            out = tiny_cnn(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()


@fault("labkit.compress", "warning")
def test_float_images_in_0_255_reach_the_onnx_model_with_a_warning(engines):
    x = images() * 255
    with pytest.warns(InputRangeWarning, match="divide 0..255 floats by 255"):
        out = engines["onnx_fp32"](x)
    assert out.shape == (4, 10)


@fault("labkit.compress", "handled")
def test_uint8_images_give_the_onnx_models_what_floats_in_0_1_give(tiny_cnn, engines):
    u8 = (images() * 255).round().to(torch.uint8)
    for name in ("onnx_fp32", "onnx_int8"):
        torch.testing.assert_close(engines[name](u8), engines[name](u8.float() / 255))
    with torch.no_grad():
        torch.testing.assert_close(engines["onnx_fp32"](u8), tiny_cnn(u8), atol=1e-5, rtol=1e-5)


@fault("labkit.compress", "handled")
def test_a_batch_of_one_image_gives_the_onnx_models_that_images_row(engines):
    x = images(5)
    for name in ("onnx_fp32", "onnx_int8"):
        torch.testing.assert_close(engines[name](x[2:3]), engines[name](x)[2:3], atol=1e-5, rtol=1e-5)


@fault("labkit.compress", "handled")
def test_an_empty_batch_gives_the_onnx_models_empty_logits(engines):
    for name in ("onnx_fp32", "onnx_int8"):
        out = engines[name](images(0))
        assert out.shape == (0, 10) and out.dtype == torch.float32


@fault("labkit.compress", "handled")
def test_a_channels_last_batch_gives_the_onnx_model_the_same_logits(engines):
    x = images()
    onnx = engines["onnx_fp32"]
    torch.testing.assert_close(onnx(x.contiguous(memory_format=torch.channels_last)), onnx(x))


@fault("labkit.compress", "handled")
def test_float64_images_give_the_onnx_model_float32_logits_of_the_same_images(engines):
    x = images()
    onnx = engines["onnx_fp32"]
    out = onnx(x.double())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, onnx(x))


@fault("labkit.compress", "error")
def test_images_of_another_size_are_refused_by_the_onnx_model_naming_the_dimension(engines):
    # The exported graph is fixed to 32 x 32 (only the batch is dynamic); ONNX Runtime's own message is clear.
    with pytest.raises(Exception, match=r"(?s)index: 2 Got: 28 Expected: 32.*fix"):
        engines["onnx_fp32"](torch.rand(2, 3, 28, 28))


@pytest.mark.parametrize("engine", [
    pytest.param("eager", marks=fault("labkit.models", "handled")),
    pytest.param("onnx_fp32", marks=fault("labkit.compress", "handled")),
    pytest.param("onnx_int8", marks=fault("labkit.compress", "handled")),
])
def test_a_nan_image_gives_nan_logits_and_leaves_the_other_images_alone(engines, engine):
    x = images()
    x[0, 1, 5, 7] = float("nan")
    model = engines[engine]
    with torch.no_grad():
        out, clean = model(x), model(x[1:])
    assert out[0].isnan().all(), "a NaN image must not get a plausible prediction"
    torch.testing.assert_close(out[1:], clean, atol=1e-5, rtol=1e-5)


@fault("labkit.compress", "error")
def test_export_into_a_read_only_folder_is_refused_and_keeps_the_old_file(tiny_cnn, onnx_files, tmp_path,
                                                                            monkeypatch):
    folder = tmp_path / "read_only"
    folder.mkdir()
    old = folder / "tiny.onnx"
    old.write_bytes(onnx_files[0].read_bytes())
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores the mode bits: the OS's refusal is simulated where it would come
        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == folder:
                raise PermissionError(errno.EACCES, "Permission denied", str(folder / ".tiny.onnx.tmp"))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        with pytest.raises(PermissionError, match=r"Permission denied.*read_only"):
            export_onnx(tiny_cnn, old)
    finally:
        folder.chmod(0o755)
    assert old.read_bytes() == onnx_files[0].read_bytes()


@fault("labkit.compress", "handled")
def test_an_export_that_fails_midway_keeps_the_previous_file(tiny_cnn, onnx_files, tmp_path, monkeypatch):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(onnx_files[0].read_bytes())

    def fail_midway(model, args, f, **kwargs):
        Path(f).write_bytes(b"\x08\x07half an onnx file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", fail_midway)
    with pytest.raises(OSError, match="No space left"):
        export_onnx(tiny_cnn, path)
    assert path.read_bytes() == onnx_files[0].read_bytes() and os.listdir(tmp_path) == ["tiny.onnx"]
    OnnxModel(path)  # still a working model


@fault("labkit.compress", "error")
def test_a_truncated_onnx_file_is_refused_naming_it_and_export_onnx(onnx_files, tmp_path):
    damaged = tmp_path / "damaged.onnx"
    data = onnx_files[0].read_bytes()
    damaged.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"(?s)damaged\.onnx.*export_onnx"):
        OnnxModel(damaged)


@fault("labkit.compress", "error")
def test_a_nan_pruning_amount_is_refused_naming_it(tiny_cnn):
    with pytest.raises(ValueError, match=r"amount must be in \[0, 1\), got nan"):
        prune_unstructured(tiny_cnn, float("nan"))


@fault("labkit.compress", "error")
def test_a_negative_channel_pruning_amount_for_one_stage_is_refused(tiny_cnn):
    with pytest.raises(ValueError, match=r"every amount must be in \[0, 1\), got \[0\.0, -0\.5, 0\.0\]"):
        prune_channels(tiny_cnn, [0.0, -0.5, 0.0])


@fault("labkit.compress", "error")
def test_int8_onnx_quantization_without_calibration_images_is_refused_and_writes_nothing(onnx_files, tmp_path):
    out = tmp_path / "int8.onnx"
    with pytest.raises(ValueError, match="needs calibration images: pass a few thousand training images"):
        quantize_onnx_int8(onnx_files[0], torch.zeros(0, 3, 32, 32, dtype=torch.uint8), out)
    assert not out.exists()


@fault("labkit.compress", "error")
def test_batchnorm_reestimation_without_images_is_refused(tiny_cnn):
    before = [m.running_var.clone() for m in tiny_cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    with pytest.raises(ValueError, match="need images and batch_size >= 1, got 0 images"):
        reestimate_batchnorm(tiny_cnn, torch.zeros(0, 3, 32, 32, dtype=torch.uint8))
    after = [m.running_var for m in tiny_cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(before, after)), "the statistics are left as they were"


@fault("labkit.compress", "error")
def test_a_sensitivity_scan_of_a_stage_the_model_lacks_is_refused(tiny_cnn):
    with pytest.raises(ValueError, match=r"stages must be among \[0, 1, 2\], got \[3\]"):
        sensitivity_scan(tiny_cnn, (0.5,), images(2), torch.zeros(2, dtype=torch.long), stages=[3])


# --- labkit.lowrank ------------------------------------------------------------------------------------------------


@fault("labkit.lowrank", "error")
def test_a_float_rank_is_refused_naming_it():
    with pytest.raises(LowRankError, match=r"head.*2\.0|2\.0.*head"):
        factorize(models.create("student_small"), ranks={"head": 2.0})


@fault("labkit.lowrank", "error")
def test_a_bad_rank_among_a_models_ranks_names_its_layer():
    with pytest.raises(LowRankError, match=r"layers\.0\.conv1.*got 0|got 0.*layers\.0\.conv1"):
        factorize(models.create("student_small"), ranks={"head": 4, "layers.0.conv1": 0})


@fault("labkit.lowrank", "error")
def test_a_nan_energy_is_refused_naming_it():
    with pytest.raises(LowRankError, match=r"energy must be in \(0, 1\], got nan"):
        factorize(models.create("student_small"), energy=float("nan"))


@fault("labkit.lowrank", "error")
def test_an_infinite_convolution_weight_is_refused_when_factorizing_a_model():
    model = models.create("student_small")
    with torch.no_grad():
        model.layers[1].conv2.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(LowRankError, match="NaN or infinity: factorize a trained, finite model"):
        factorize(model, energy=0.9)


@fault("labkit.lowrank", "handled")
def test_an_all_zero_layer_keeps_any_energy_at_rank_one_and_computes_the_same():
    layer = nn.Linear(6, 4)
    with torch.no_grad():
        layer.weight.zero_()  # e.g. a fully pruned layer: no singular value carries energy (0 / 0)
    rank = rank_for_energy(singular_values(layer), 0.9)
    assert rank == 1
    pair = factorize_linear(layer, rank)
    x = torch.randn(3, 6)
    assert all(torch.isfinite(p).all() for p in pair.parameters())
    with torch.no_grad():
        assert torch.equal(pair(x), layer(x))


# --- labkit.lm: corpus, tokenizer, saving ------------------------------------------------------------------------


@fault("labkit.lm", "error")
def test_a_truncated_corpus_file_is_a_damaged_file_error(tmp_path, monkeypatch):
    data = corpus_module.TOPICS.read_bytes()
    truncated = tmp_path / "topics.json.gz"
    truncated.write_bytes(data[:len(data) // 2])
    monkeypatch.setattr(corpus_module, "TOPICS", truncated)
    with pytest.raises(DamagedFileError, match=r"(?s)topics\.json\.gz.*reinstall labkit"):
        lm.load_corpus()


@fault("labkit.lm", "error")
def test_a_shortened_corpus_sha256_is_refused_showing_both_hashes():
    full = corpus_module.TOPICS_SHA256
    with pytest.raises(lm.CorpusMismatchError, match=rf"{full}, not the expected {full[:12]}:.*retrain the teacher"):
        lm.load_corpus(expected_sha256=full[:12])  # as copied from a truncated display


@fault("labkit.lm", "error")
def test_decoding_negative_ids_is_refused_naming_the_range():
    with pytest.raises(lm.VocabularyMismatchError, match=r"ids from -1 to 2.*0 to 3\): encode the text with the"):
        lm.CharTokenizer(("a", "b", "c")).decode([2, -1])


@fault("labkit.lm", "error")
def test_decoding_float_ids_is_refused_naming_the_dtype():
    with pytest.raises(ValueError, match="integer tensor of token ids, got torch.float32"):
        lm.CharTokenizer(("a", "b", "c")).decode(torch.tensor([1.0, 2.0]))


@fault("labkit.lm", "error")
def test_decoding_ids_of_three_dimensions_is_refused_naming_the_shape():
    with pytest.raises(ValueError, match=r"1-D.*2-D.*\(1, 2, 2\)"):
        lm.CharTokenizer(("a", "b", "c")).decode(torch.ones(1, 2, 2, dtype=torch.long))


@fault("labkit.lm", "error")
def test_a_vocabulary_in_another_order_is_refused_saying_the_order_differs():
    with pytest.raises(lm.VocabularyMismatchError, match=r"order.*load_lm"):
        lm.check_same_vocabulary(lm.CharTokenizer(("a", "b", "c")), lm.CharTokenizer(("b", "a", "c")))


def tiny_lm(vocab: int, context: int = 8, seed: int = 0, d_model: int = 8) -> lm.CharTransformer:
    torch.manual_seed(seed)
    return lm.CharTransformer(lm.LMConfig(vocab, context=context, n_layer=1, n_head=2, d_model=d_model))


@pytest.fixture
def saved_lm(tmp_path) -> tuple[Path, lm.CharTransformer, lm.CharTokenizer]:
    tok = lm.CharTokenizer.from_text(TEXT, 1)
    model = tiny_lm(tok.vocab_size).eval()
    path = tmp_path / "lm.safetensors"
    lm.save_lm(model, tok, path)
    return path, model, tok


@fault("labkit.lm", "error")
def test_a_loaded_model_checked_against_another_vocabulary_is_refused(saved_lm):
    path, _, tok = saved_lm
    loaded = lm.load_lm(path, device="cpu")
    other = lm.CharTokenizer.from_text(TEXT.upper(), 1)
    with pytest.raises(lm.VocabularyMismatchError, match=r"another vocabulary.*use the tokenizer load_lm returned"):
        lm.check_same_vocabulary(other, loaded.tokenizer)
    lm.check_same_vocabulary(tok, loaded.tokenizer)  # its own passes


@fault("labkit.lm", "error")
def test_a_truncated_language_model_file_is_a_weights_error_naming_it(saved_lm):
    path = saved_lm[0]
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsError, match=r"lm\.safetensors is not a language model .*save it again with save_lm"):
        lm.load_lm(path, device="cpu")


@fault("labkit.lm", "error")
def test_a_safetensors_file_without_labkits_header_is_a_weights_error(saved_lm, tmp_path):
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in saved_lm[1].state_dict().items()}, str(plain))
    with pytest.raises(WeightsError, match=r"plain\.safetensors is not a language model saved by labkit\.lm\.save_lm"):
        lm.load_lm(plain, device="cpu")


@fault("labkit.lm", "error")
def test_a_file_whose_vocabulary_does_not_fit_its_model_is_refused(saved_lm, tmp_path):
    _, model, tok = saved_lm
    header = {"config": asdict(model.config), "vocabulary": list(tok.chars) + ["Z"], "corpus_sha256": ""}
    path = tmp_path / "edited.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
                                metadata={"labkit.lm": json.dumps(header)})
    with pytest.raises((WeightsError, lm.VocabularyMismatchError), match=r"edited\.safetensors.*vocabulary"):
        lm.load_lm(path, device="cpu")


@fault("labkit.lm", "handled")
def test_a_save_that_fails_midway_keeps_the_previous_model_file(saved_lm, monkeypatch):
    path, model, tok = saved_lm
    before = path.read_bytes()

    def fail_midway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "save_file", fail_midway)
    with pytest.raises(OSError, match="No space left"):
        lm.save_lm(tiny_lm(tok.vocab_size, seed=1), tok, path)
    assert path.read_bytes() == before and os.listdir(path.parent) == [path.name]
    assert lm.load_lm(path, device="cpu").tokenizer == tok


# --- labkit.lm: sampling and batches -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharp_lm() -> lm.CharTransformer:
    """A tiny model with large weights: logits far apart, so greedy choices do not hang on rounding."""
    model = tiny_lm(12, context=8)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
    return model.eval()


@fault("labkit.lm", "error")
def test_sampling_at_a_nan_or_negative_temperature_is_refused(sharp_lm):
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match=rf"temperature T must be a finite number > 0, got {bad}"):
            lm.sample(sharp_lm, torch.tensor([1, 2]), 3, temperature=bad)


@fault("labkit.lm", "error")
def test_sampling_a_negative_number_of_tokens_is_refused(sharp_lm):
    with pytest.raises(ValueError, match="num_tokens must be >= 0, got -3"):
        lm.sample(sharp_lm, torch.tensor([1, 2]), -3)


@fault("labkit.lm", "error")
def test_sampling_from_an_empty_prompt_is_refused(sharp_lm):
    with pytest.raises(ValueError, match=r"length >= 1, got shape \(0,\)"):
        lm.sample(sharp_lm, torch.tensor([], dtype=torch.long), 3)


@fault("labkit.lm", "error")
def test_a_prompt_with_ids_outside_the_vocabulary_is_refused(sharp_lm):
    with pytest.raises(lm.VocabularyMismatchError, match=r"prompt hold ids from 1 to 12.*12 tokens"):
        lm.sample(sharp_lm, torch.tensor([[1, 12]]), 3)


@fault("labkit.lm", "handled")
def test_sampling_past_the_context_slides_the_window(sharp_lm):
    prompt = torch.tensor([3, 1, 4, 1, 5])
    out = lm.sample(sharp_lm, prompt, 12, temperature=0)  # 17 tokens from a context of 8
    ids = prompt
    with torch.no_grad():  # the definition: each next token from the last `context` tokens, no cache
        for _ in range(12):
            ids = torch.cat([ids, sharp_lm(ids[-8:][None])[0, -1].argmax()[None]])
    assert torch.equal(out, ids)


@fault("labkit.lm", "error")
def test_text_windows_with_context_zero_is_refused_naming_context():
    with pytest.raises(ValueError, match=r"context.*got 0"):
        lm.text_windows(torch.arange(30), 0)


@fault("labkit.lm", "error")
def test_corpus_batches_from_text_shorter_than_a_window_are_refused():
    with pytest.raises(ValueError, match=r"at least context \+ 1 = 9 tokens, got shape \(5,\)"):
        lm.batch_from_corpus(torch.arange(5), 2, 8, torch.Generator())


# --- labkit.lm: training and resuming -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_text() -> tuple[lm.CharTokenizer, torch.Tensor]:
    tok = lm.CharTokenizer.from_text(TEXT, 1)
    return tok, tok.encode(TEXT * 2)


def train(tok, ids, objective, out=None, d_model=8, **kwargs):
    model = tiny_lm(tok.vocab_size, d_model=d_model)
    history = lm.train_lm(model, lambda g: lm.batch_from_corpus(ids, 4, 8, g), objective, steps=4, warmup_steps=1,
                          log_every=2, checkpoint_every=2, out=out, progress=False, **kwargs)
    return model, history


def interrupted(tok, ids, objective, out):
    def stop(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tok, ids, objective, out, on_step=stop)


@fault("labkit.lm", "error")
def test_resuming_under_another_teacher_is_refused(lm_text, tmp_path):
    tok, ids = lm_text
    teacher_a, teacher_b = tiny_lm(tok.vocab_size, seed=1), tiny_lm(tok.vocab_size, seed=2)
    interrupted(tok, ids, lm.teacher_objective(teacher_a, lm.forward_kl), tmp_path)
    with pytest.raises(ResumeError, match=r"other settings \(objective"):
        train(tok, ids, lm.teacher_objective(teacher_b, lm.forward_kl), tmp_path, resume=True)


@fault("labkit.lm", "error")
def test_resuming_from_a_damaged_checkpoint_is_refused_saying_to_delete_it(lm_text, tmp_path):
    tok, ids = lm_text
    interrupted(tok, ids, lm.ce_objective, tmp_path)
    checkpoint = tmp_path / "checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(ResumeError, match=r"checkpoint\.pt cannot be read \(DamagedFileError.*delete it"):
        train(tok, ids, lm.ce_objective, tmp_path, resume=True)


@fault("labkit.lm", "error")
def test_resuming_with_another_model_shape_is_refused_naming_the_setting(lm_text, tmp_path):
    tok, ids = lm_text
    interrupted(tok, ids, lm.ce_objective, tmp_path)
    with pytest.raises(ResumeError, match=r"other settings \(model\.d_model\); resume with the checkpoint's settings"):
        train(tok, ids, lm.ce_objective, tmp_path, resume=True, d_model=16)


@fault("labkit.lm", "handled")
def test_resuming_before_any_checkpoint_trains_from_scratch(lm_text, tmp_path):
    tok, ids = lm_text
    fresh, fresh_history = train(tok, ids, lm.ce_objective)
    resumed, resumed_history = train(tok, ids, lm.ce_objective, tmp_path / "new", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), resumed.state_dict().values()))
    assert fresh_history["loss"] == resumed_history["loss"]


@fault("labkit.lm", "error")
def test_a_file_given_as_the_run_folder_is_refused(lm_text, tmp_path):
    tok, ids = lm_text
    (tmp_path / "run").write_text("notes")
    with pytest.raises(NotADirectoryError, match=r"run' is a file; pass a folder"):
        train(tok, ids, lm.ce_objective, tmp_path / "run")
    assert (tmp_path / "run").read_text() == "notes"


@fault("labkit.lm", "error")
def test_a_loss_that_becomes_nan_stops_training_naming_the_step(lm_text):
    tok, ids = lm_text
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 1 .*lower the learning rate"):
        train(tok, ids, lambda model, batch: lm.ce_objective(model, batch) * float("nan"))


# --- labkit.lm.hf --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf():
    from labkit.lm import hf
    return hf


def gpt2(hf, **changes):
    """A randomly initialised GPT2LMHeadModel of to_hf's shape, with ``changes`` to its config."""
    config = hf.hf_config(tiny_lm(12, context=16))
    for key, value in changes.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return hf._transformers().GPT2LMHeadModel(config).eval()


@fault("labkit.lm.hf", "handled")
def test_an_untied_model_with_dropout_round_trips_through_gpt2_with_the_same_logits(hf):
    torch.manual_seed(0)
    model = lm.CharTransformer(lm.LMConfig(12, context=16, n_layer=2, n_head=4, d_model=16, dropout=0.1,
                                           tie_weights=False))
    with torch.no_grad():  # non-zero biases and gains, so that a swapped or dropped one shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0.5 if name.endswith("weight") else 0.0, 0.3)
    model.eval()
    back = hf.from_hf(hf.to_hf(model))
    ids = torch.randint(0, 12, (2, 16), generator=torch.Generator().manual_seed(0))
    assert back.config == model.config and not back.training
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids))


@fault("labkit.lm.hf", "error")
def test_a_gpt2_with_another_mlp_width_is_refused(hf):
    with pytest.raises(ValueError, match=r"exact GELU, 4x MLP.*n_inner=16"):
        hf.from_hf(gpt2(hf, n_inner=16))  # d_model 8: to_hf's MLP is 32 wide


@fault("labkit.lm.hf", "error")
def test_a_gpt2_with_another_layer_norm_epsilon_is_refused(hf):
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        hf.from_hf(gpt2(hf, layer_norm_epsilon=1e-2))


@fault("labkit.lm.hf", "error")
def test_a_gpt2_with_unscaled_attention_is_refused(hf):
    with pytest.raises(ValueError, match="scale_attn_weights"):
        hf.from_hf(gpt2(hf, scale_attn_weights=False))


@fault("labkit.lm.hf", "error")
def test_a_model_that_is_not_a_gpt2_is_refused_naming_its_type(hf):
    transformers = hf._transformers()
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=12, hidden_size=16, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2))
    with pytest.raises(ValueError, match=r"LlamaForCausalLM.*GPT2LMHeadModel|GPT-2.*Llama"):
        hf.from_hf(llama)
