"""labkit.lm.hf: the course's character models and tokenizer as Hugging Face ones, checked against labkit's own
(the oracle): the same logits, the same ids, and the same again after save_pretrained / from_pretrained."""

from __future__ import annotations

import builtins

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from labkit import lm
from labkit.lm import hf


def tiny_model(tie_weights: bool) -> lm.CharTransformer:
    torch.manual_seed(0)
    model = lm.CharTransformer(lm.LMConfig(12, context=16, n_layer=2, n_head=2, d_model=16, tie_weights=tie_weights))
    with torch.no_grad():  # non-zero biases and gains, so that a swapped or dropped one shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0.5 if name.endswith("weight") else 0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def teacher() -> lm.LoadedLM:
    return lm.load_lm_teacher("cpu")


@pytest.fixture(scope="module")
def held_out() -> str:
    return lm.load_corpus().held_out[:3000]


@pytest.mark.parametrize("tie_weights", [True, False])
def test_the_gpt2_copy_computes_the_same_logits(tie_weights):
    model = tiny_model(tie_weights)
    ids = torch.randint(0, 12, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(hf.to_hf(model)(ids).logits, model(ids), atol=1e-5)


def test_the_shipped_teacher_reloads_from_save_pretrained_with_the_same_logits_and_ids(teacher, held_out, tmp_path):
    model, tokenizer = teacher.model, teacher.tokenizer
    ids = tokenizer.encode(held_out)[: 4 * model.config.context].view(4, -1)
    folder = hf.save_hf(model, tokenizer, tmp_path / "teacher")
    reloaded, fast = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        gap = (reloaded(ids).logits - model(ids)).abs().max().item()
    assert gap < 1e-4, f"largest logit difference {gap}"
    assert fast(held_out, add_special_tokens=False)["input_ids"] == tokenizer.encode(held_out).tolist()


def test_the_fast_tokenizer_keeps_every_id_and_maps_unknown_characters_to_zero(teacher):
    tokenizer = teacher.tokenizer
    fast = hf.hf_tokenizer(tokenizer)
    text = "def f(x):\n\treturn x  # ok\r\n" + "\N{SNOWMAN}\N{LINE SEPARATOR}"
    ids = fast(text, add_special_tokens=False)["input_ids"]
    assert ids == tokenizer.encode(text).tolist() and ids[-2:] == [lm.CharTokenizer.UNKNOWN] * 2
    assert fast.decode(ids) == tokenizer.decode(torch.tensor(ids)), "decoding joins characters without spaces"
    assert len(fast) == tokenizer.vocab_size


def test_saving_a_model_with_another_vocabulary_is_refused(tmp_path):
    with pytest.raises(ValueError, match="tokenizer it was trained with"):
        hf.save_hf(tiny_model(True), lm.CharTokenizer(("a", "b")), tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_without_transformers_the_error_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers":
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(hf.MissingLibraryError, match=r"\.\[llm\]"):
        hf.to_hf(tiny_model(True))


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_trl_gkd_loss_is_labkits_divergence_on_the_completion(beta):
    from trl.experimental.gkd import GKDTrainer

    student, teacher = torch.randn(2, 10, 7), torch.randn(2, 10, 7)
    labels = torch.ones(2, 10, dtype=torch.long)
    labels[:, :4] = -100  # the prompt
    theirs = GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta)
    s, t = student[:, 4:], teacher[:, 4:]
    ours = {0.0: lambda: lm.forward_kl(s, t), 1.0: lambda: lm.reverse_kl(s, t)}.get(
        beta, lambda: lm.generalized_jsd(s, t, beta))()
    assert torch.allclose(theirs, ours, atol=1e-6), "TRL's beta = 0 is forward KL, 1 reverse KL, between: JSD_beta"


def test_one_trl_gkd_step_trains_the_gpt2_copy_offline(tmp_path):
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    tokenizer = lm.CharTokenizer(tuple("abcdefgh "))
    student, teacher = hf.to_hf(tiny_model(True)).train(), hf.to_hf(tiny_model(False))
    ids = tokenizer.encode("abc defg habc " * 20)
    windows = ids[: 8 * 12].view(8, 12)  # ids below the tiny models' 12
    before = student.transformer.h[0].mlp.c_fc.weight.detach().clone()
    args = GKDConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, lmbda=1.0, beta=0.5,
                     temperature=1.0, max_new_tokens=4, learning_rate=1e-2, report_to=[], bf16=False, use_cpu=True,
                     save_strategy="no", gradient_checkpointing=False)
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=hf.windows_dataset(windows),
                         processing_class=hf.hf_tokenizer(tokenizer), data_collator=hf.WindowCollator(4))
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(student.transformer.h[0].mlp.c_fc.weight.detach(), before), "the student learned"
    hf.from_hf(student)  # and is still a CharTransformer: the attention biases stayed at 0


def test_the_window_collator_masks_the_prompt_and_refuses_short_windows():
    batch = hf.WindowCollator(3)([{"input_ids": [1, 2, 3, 4, 5]}, {"input_ids": [5, 4, 3, 2, 1]}])
    assert batch["labels"].tolist() == [[-100, -100, -100, 4, 5], [-100, -100, -100, 2, 1]]
    assert batch["prompts"].tolist() == [[1, 2, 3], [5, 4, 3]]
    with pytest.raises(ValueError, match="longer than"):
        hf.WindowCollator(5)([{"input_ids": [1, 2, 3, 4, 5]}])
    with pytest.raises(ValueError, match="at least 1"):
        hf.WindowCollator(0)


@pytest.mark.parametrize("tie_weights", [True, False])
def test_a_gpt2_copy_converts_back_to_the_same_model(tie_weights):
    model = tiny_model(tie_weights)
    back = hf.from_hf(hf.to_hf(model))
    assert back.config == model.config
    for (name, mine), theirs in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_only_gpt2_models_of_the_courses_shape_convert_back():
    gpt2 = hf.to_hf(tiny_model(True))
    with torch.no_grad():
        gpt2.transformer.h[0].attn.c_attn.bias.fill_(0.1)
    with pytest.raises(ValueError, match="biases"):
        hf.from_hf(gpt2)
    gpt2.config.activation_function = "gelu_new"
    with pytest.raises(ValueError, match="exact GELU"):
        hf.from_hf(gpt2)
