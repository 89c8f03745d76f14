"""The course's character models as Hugging Face models (12_distill_language_model).

A :class:`~labkit.lm.model.CharTransformer` is a GPT-2 in all but names: learned token and position embeddings,
pre-LayerNorm blocks, exact GELU, a final LayerNorm, the head tied to the token embedding. :func:`to_hf` copies its
weights into ``transformers``' ``GPT2LMHeadModel``; :func:`hf_tokenizer` builds the same character vocabulary as a
fast tokenizer (``tokenizers``); :func:`save_hf` writes both with ``save_pretrained``, so that
``AutoModelForCausalLM.from_pretrained(folder)`` and ``AutoTokenizer.from_pretrained(folder)`` load them like any
model of the hub, and TRL's trainers can take them. Needs the ``llm`` extra (``pip install -e '.[llm]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from labkit.lm.model import CharTransformer
from labkit.lm.tokenizer import CharTokenizer

LLM_EXTRA = "pip install -e '.[llm]'"


class MissingLibraryError(ImportError):
    """A Hugging Face library that the ``llm`` extra installs is missing; the message says how to install it."""


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as error:  # the course runs without it; only this bridge needs it
        raise MissingLibraryError(f"labkit.lm.hf needs transformers and tokenizers: {LLM_EXTRA}") from error
    return transformers


def hf_config(model: CharTransformer) -> Any:
    """The ``GPT2Config`` of ``model``'s shape (no dropout differences: the rates are copied)."""
    c = model.config
    return _transformers().GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.context, n_embd=c.d_model, n_layer=c.n_layer, n_head=c.n_head,
        n_inner=4 * c.d_model, activation_function="gelu", resid_pdrop=c.dropout, embd_pdrop=c.dropout,
        attn_pdrop=c.dropout, layer_norm_epsilon=1e-5, tie_word_embeddings=c.tie_weights,
        bos_token_id=None, eos_token_id=None, pad_token_id=CharTokenizer.UNKNOWN)


def _gpt2_state(model: CharTransformer) -> dict[str, torch.Tensor]:
    # GPT-2's Conv1D stores (in, out), nn.Linear (out, in); CharTransformer's qkv has no bias, GPT-2's c_attn has one
    s = {k: v.detach() for k, v in model.state_dict().items()}
    out = {"transformer.wte.weight": s["tok_emb.weight"], "transformer.wpe.weight": s["pos_emb.weight"],
           "transformer.ln_f.weight": s["ln_f.weight"], "transformer.ln_f.bias": s["ln_f.bias"]}
    for i in range(model.config.n_layer):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        out.update({
            h + "ln_1.weight": s[b + "ln1.weight"], h + "ln_1.bias": s[b + "ln1.bias"],
            h + "attn.c_attn.weight": s[b + "attn.qkv.weight"].T,
            h + "attn.c_attn.bias": torch.zeros(3 * model.config.d_model),
            h + "attn.c_proj.weight": s[b + "attn.proj.weight"].T, h + "attn.c_proj.bias": s[b + "attn.proj.bias"],
            h + "ln_2.weight": s[b + "ln2.weight"], h + "ln_2.bias": s[b + "ln2.bias"],
            h + "mlp.c_fc.weight": s[b + "mlp.0.weight"].T, h + "mlp.c_fc.bias": s[b + "mlp.0.bias"],
            h + "mlp.c_proj.weight": s[b + "mlp.2.weight"].T, h + "mlp.c_proj.bias": s[b + "mlp.2.bias"]})
    out["lm_head.weight"] = s["tok_emb.weight"] if model.head is None else s["head.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def to_hf(model: CharTransformer) -> Any:
    """``model`` as a ``transformers`` ``GPT2LMHeadModel`` with the same weights, in eval mode: its logits equal
    ``model``'s to float tolerance (introduced in 12_distill_language_model)."""
    hf = _transformers().GPT2LMHeadModel(hf_config(model))
    missing, unexpected = hf.load_state_dict(_gpt2_state(model), strict=False)
    # the causal-mask buffers some versions register are not weights; anything else unmatched is a mapping error
    missing = [k for k in missing if not k.endswith(("attn.bias", "attn.masked_bias"))]
    if missing or unexpected:
        raise RuntimeError(f"GPT-2 weights not matched: missing {missing}, unexpected {unexpected}")
    return hf.eval()


def hf_tokenizer(tokenizer: CharTokenizer) -> Any:
    """``tokenizer`` as a ``PreTrainedTokenizerFast``: one token per character, the same ids, id 0 for any unknown
    character, decoding without spaces between tokens (introduced in 12_distill_language_model)."""
    transformers = _transformers()
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    unknown = CharTokenizer.UNKNOWN_TEXT
    vocab = {unknown: CharTokenizer.UNKNOWN} | {c: i + 1 for i, c in enumerate(tokenizer.chars)}
    fast = Tokenizer(models.WordLevel(vocab, unk_token=unknown))
    fast.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, newlines too
    fast.decoder = decoders.Fuse()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=fast, unk_token=unknown, pad_token=unknown,
                                                clean_up_tokenization_spaces=False)


def save_hf(model: CharTransformer, tokenizer: CharTokenizer, folder: str | Path) -> Path:
    """``model`` and ``tokenizer`` saved with ``save_pretrained`` in ``folder`` (created): ready for
    ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` (12_distill_language_model)."""
    folder = Path(folder)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens and the model {model.config.vocab_size}: "
                         "save a model with the tokenizer it was trained with (load_lm returns both)")
    to_hf(model).save_pretrained(folder)
    hf_tokenizer(tokenizer).save_pretrained(folder)
    return folder


class WindowCollator:
    """Batches for TRL's distillation trainers from fixed-length windows of token ids (introduced in
    12_distill_language_model): the first ``prompt_tokens`` ids of each window are the prompt (what on-policy
    training generates from; no loss on them), the rest the completion. Windows of one length need no padding."""

    def __init__(self, prompt_tokens: int):
        if prompt_tokens < 1:
            raise ValueError(f"prompt_tokens must be at least 1, got {prompt_tokens}: on-policy generation starts "
                             "from a prompt")
        self.prompt_tokens = prompt_tokens

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([e["input_ids"] for e in examples], dtype=torch.long)
        if ids.dim() != 2 or ids.shape[1] <= self.prompt_tokens:
            raise ValueError(f"windows must be longer than the {self.prompt_tokens}-token prompt, got shape "
                             f"{tuple(ids.shape)}")
        labels = ids.clone()
        labels[:, :self.prompt_tokens] = -100  # the trainers' "no loss here"
        prompts = ids[:, :self.prompt_tokens]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                "prompts": prompts, "prompt_attention_mask": torch.ones_like(prompts)}


def windows_dataset(windows: torch.Tensor) -> Any:
    """A ``datasets.Dataset`` with one ``input_ids`` row per window of a (rows, length) id tensor, for
    :class:`WindowCollator` (12_distill_language_model)."""
    try:
        from datasets import Dataset
    except ImportError as error:
        raise MissingLibraryError(f"windows_dataset needs the datasets library: {LLM_EXTRA}") from error
    if windows.dim() != 2 or windows.is_floating_point():
        raise ValueError(f"windows must be a (rows, length) tensor of token ids, got {windows.dtype} "
                         f"{tuple(windows.shape)}")
    return Dataset.from_dict({"input_ids": windows.tolist()})
