"""The precision switch: LABKIT_PRECISION, what `auto` picks, bf16 training, and every record that names it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from labkit import envcheck, lm, models, settings
from labkit.atomic import load_checked
from labkit.data import CifarData
from labkit.evaluate import predict_logits
from labkit.protocol import kept_model
from labkit.results import machine_info
from labkit.teacher import FrozenTeacher, teacher_logits_for_views
from labkit.train import ResumeError, distill, train


@pytest.fixture
def random_data() -> CifarData:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(96) % 10
    return CifarData(images[:64], labels[:64], images[64:], labels[64:])


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def with_bf16_cpu(monkeypatch, has_it: bool) -> None:
    monkeypatch.setattr(settings, "_cpu_bf16_instructions", lambda: ["AVX512-BF16"] if has_it else [])


@pytest.mark.parametrize("value, expected", [("fp32", "fp32"), (" BF16 ", "bf16"), ("bf16", "bf16")])
def test_an_explicit_precision_is_taken_as_it_is(monkeypatch, value, expected):
    monkeypatch.setenv(settings.PRECISION_ENV, value)
    with_bf16_cpu(monkeypatch, has_it=False)
    assert settings.precision("cpu") == expected


@pytest.mark.parametrize("value", ["half", "float16", "bfloat", "32"])
def test_a_bad_precision_is_refused_with_the_choices(monkeypatch, value):
    monkeypatch.setenv(settings.PRECISION_ENV, value)
    with pytest.raises(ValueError, match=rf"LABKIT_PRECISION='{value}' is not a precision; use one of auto, bf16, fp32"):
        settings.precision("cpu")


@pytest.mark.parametrize("value", [None, "", "auto", "AUTO"])
def test_auto_is_bf16_only_on_a_cpu_that_computes_in_it(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(settings.PRECISION_ENV, raising=False)
    else:
        monkeypatch.setenv(settings.PRECISION_ENV, value)
    with_bf16_cpu(monkeypatch, has_it=False)
    assert settings.precision("cpu") == "fp32" and settings.native_bf16("cpu") is None
    assert isinstance(settings.autocast("cpu"), type(settings.autocast("meta")))  # no autocast at all
    with_bf16_cpu(monkeypatch, has_it=True)
    assert settings.precision("cpu") == "bf16" and settings.native_bf16("cpu") == "CPU with AVX512-BF16"
    assert settings.precision("mps") == "fp32"  # Apple's GPU: not decided by the CPU's instructions


def test_a_gpu_that_only_emulates_bf16_gets_fp32(monkeypatch):
    seen = []

    def is_bf16_supported(including_emulation=True):
        seen.append(including_emulation)
        return including_emulation  # a pre-Ampere GPU: bfloat16 only by emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.delenv(settings.PRECISION_ENV, raising=False)
    assert settings.native_bf16("cuda") is None and settings.precision("cuda") == "fp32" and seen[0] is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert settings.native_bf16("cuda") == "CUDA GPU with bfloat16" and settings.precision("cuda") == "bf16"


def test_the_cpu_detection_asks_pytorch_for_the_instructions(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert settings._cpu_bf16_instructions() == ["AVX512-BF16"]
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert settings._cpu_bf16_instructions() == []


def test_a_model_with_its_own_number_format_keeps_it(monkeypatch):
    monkeypatch.setenv(settings.PRECISION_ENV, "bf16")

    class Deployed(nn.Linear):
        fixed_precision = "fp32"

    x = torch.randn(4, 8)
    with settings.autocast("cpu", nn.Linear(8, 2)):
        assert nn.Linear(8, 2)(x).dtype == torch.bfloat16
    deployed = Deployed(8, 2)
    with settings.autocast("cpu", deployed):
        assert deployed(x).dtype == torch.float32
    assert settings.precision("cpu", FrozenTeacher(deployed)) == "fp32"


def _two_steps(data: CifarData, monkeypatch, precision: str):
    monkeypatch.setenv(settings.PRECISION_ENV, precision)
    torch.manual_seed(0)
    model = models.create("student_small")
    history = train(model, data, epochs=2, batch_size=32, progress=False)
    return model, history


def test_bf16_training_stays_finite_close_to_fp32_and_keeps_float32_state(random_data, monkeypatch):
    fp32_model, fp32 = _two_steps(random_data, monkeypatch, "fp32")
    bf16_model, bf16 = _two_steps(random_data, monkeypatch, "bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16") and "computed in bf16" in repr(bf16)
    losses = torch.tensor([fp32["loss"], bf16["loss"]])
    assert torch.isfinite(losses).all()
    # bfloat16 keeps 8 significant bits: the runs differ, by about its rounding, not by a different computation
    assert fp32["loss"] != bf16["loss"]
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.02)
    for name, value in bf16_model.state_dict().items():  # weights, BatchNorm statistics: float32 in both
        assert value.dtype == fp32_model.state_dict()[name].dtype, name
        if value.is_floating_point():
            assert value.dtype == torch.float32 and torch.isfinite(value).all(), name
    assert not torch.equal(bf16_model.head.weight, fp32_model.head.weight)
    torch.testing.assert_close(bf16_model.head.weight, fp32_model.head.weight, atol=0.02, rtol=0.05)


def test_evaluation_is_float32_unless_asked_to_follow_the_setting(random_data, monkeypatch):
    torch.manual_seed(0)
    model = models.create("student_small")
    monkeypatch.setenv(settings.PRECISION_ENV, "fp32")
    reference = predict_logits(model, random_data.test_images)
    monkeypatch.setenv(settings.PRECISION_ENV, "bf16")
    assert torch.equal(predict_logits(model, random_data.test_images), reference)  # the same on every machine
    logits = predict_logits(model, random_data.test_images, precision=None)
    assert logits.dtype == torch.float32 and not torch.equal(logits, reference)
    torch.testing.assert_close(logits, reference, atol=0.05, rtol=0.05)
    assert torch.equal(predict_logits(model, random_data.test_images, precision="bf16"), logits)


@pytest.mark.parametrize("kind", ["train", "distill"])
def test_resume_refuses_a_checkpoint_of_the_other_precision(random_data, monkeypatch, tmp_path, private_cache, kind):
    def run(precision: str, epochs: int):
        monkeypatch.setenv(settings.PRECISION_ENV, precision)
        torch.manual_seed(0)
        model = models.create("student_small")
        if kind == "train":
            return train(model, random_data, epochs=epochs, batch_size=32, progress=False, out=tmp_path, resume=True)
        torch.manual_seed(1)
        teacher = models.create("student_small")
        return distill(model, teacher, random_data, epochs=epochs, teacher_views=1, batch_size=32, progress=False,
                       out=tmp_path, resume=True)

    finished = run("fp32", 2)
    with pytest.raises(ResumeError, match=r"precision: 'fp32' in the checkpoint, 'bf16' now.*LABKIT_PRECISION=fp32"):
        run("bf16", 2)
    assert run("fp32", 2)["loss"] == finished["loss"]  # with the checkpoint's precision it is read back


def test_a_checkpoint_from_before_the_switch_counts_as_fp32(random_data, monkeypatch, tmp_path):
    monkeypatch.setenv(settings.PRECISION_ENV, "fp32")
    torch.manual_seed(0)
    train(models.create("student_small"), random_data, epochs=2, batch_size=32, progress=False, out=tmp_path)
    state = load_checked(tmp_path / "checkpoint.pt")
    del state["run"]["precision"]
    torch.save(state, tmp_path / "checkpoint.pt")
    monkeypatch.setenv(settings.PRECISION_ENV, "bf16")
    with pytest.raises(ResumeError, match="precision: 'fp32' in the checkpoint"):
        train(models.create("student_small"), random_data, epochs=2, batch_size=32, progress=False, out=tmp_path,
              resume=True)


def test_the_teacher_logit_cache_keeps_each_precision_apart(random_data, monkeypatch, private_cache):
    torch.manual_seed(0)
    teacher = FrozenTeacher(models.create("student_small"))
    views = [random_data.test_images]
    found = {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setenv(settings.PRECISION_ENV, precision)
        found[precision] = teacher_logits_for_views(teacher, views, progress=False)
    assert len(list((private_cache / "teacher_logits").glob("*.pt"))) == 2
    assert not torch.equal(found["fp32"], found["bf16"])
    monkeypatch.setenv(settings.PRECISION_ENV, "fp32")
    assert torch.equal(teacher_logits_for_views(teacher, views, progress=False), found["fp32"])


def test_kept_runs_are_named_by_their_precision_and_fp32_keeps_the_old_names(monkeypatch, tmp_path):
    what = {"seed": 0, "arm": "distilled"}
    made = []

    def make():
        made.append(settings.precision())
        return nn.Linear(2, 2), {"precision": settings.precision()}

    for precision in ("fp32", "bf16", "fp32", "bf16"):
        monkeypatch.setenv(settings.PRECISION_ENV, precision)
        _, record = kept_model(tmp_path, what, make, lambda: nn.Linear(2, 2))
        assert record["precision"] == precision
    assert made == ["fp32", "bf16"]  # each trained once, then read back
    import hashlib
    legacy = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]
    assert (tmp_path / f"{legacy}.json").is_file()  # runs kept before the switch (all fp32) are still found


def test_results_and_the_environment_report_name_the_precision(monkeypatch):
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    with_bf16_cpu(monkeypatch, has_it=True)
    monkeypatch.delenv(settings.PRECISION_ENV, raising=False)
    assert machine_info()["precision"] == "bf16" and machine_info()["native_bf16"] == "CPU with AVX512-BF16"
    assert envcheck.environment_report()["precision"] == "bf16 (auto: CPU with AVX512-BF16)"
    with_bf16_cpu(monkeypatch, has_it=False)
    assert envcheck.environment_report()["precision"] == "fp32 (auto: no native bfloat16 on cpu)"
    monkeypatch.setenv(settings.PRECISION_ENV, "bf16")
    assert envcheck.environment_report()["precision"] == "bf16 (LABKIT_PRECISION=bf16)"
    monkeypatch.setenv(settings.PRECISION_ENV, "half")
    assert envcheck.environment_report()["precision"].startswith("none (LABKIT_PRECISION='half' is not a precision")


def test_the_language_model_records_its_precision_and_resumes_only_in_it(monkeypatch, tmp_path):
    text = "the cat sat on the mat. the dog sat on the log. "
    tok = lm.CharTokenizer.from_text(text, 1)
    ids = tok.encode(text * 4)

    class Interrupted(Exception):
        pass

    def stop_after_two(step: int) -> None:
        if step == 2:
            raise Interrupted

    def run(precision: str, **kwargs):
        monkeypatch.setenv(settings.PRECISION_ENV, precision)
        torch.manual_seed(0)
        model = lm.CharTransformer(lm.LMConfig(tok.vocab_size, context=16, n_layer=1, n_head=2, d_model=16))
        batches = lambda g: lm.batch_from_corpus(ids, 4, 12, g)
        return lm.train_lm(model, batches, lm.ce_objective, steps=4, warmup_steps=1, log_every=2,
                           checkpoint_every=2, out=tmp_path, resume=True, progress=False, **kwargs)

    with pytest.raises(Interrupted):
        run("bf16", on_step=stop_after_two)
    with pytest.raises(ResumeError, match="compute.precision"):
        run("fp32")
    history = run("bf16")
    assert history.precision == "bf16" and len(history) == 2
    assert all(torch.isfinite(torch.tensor(history["loss"])))
