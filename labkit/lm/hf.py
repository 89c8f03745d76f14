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

from labkit.lm.model import CharTransformer, LMConfig
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


def _name_pairs(n_layer: int) -> list[tuple[str, str, bool]]:
    """(CharTransformer name, GPT-2 name, transposed) of every weight: GPT-2's Conv1D stores (in, out), nn.Linear
    (out, in)."""
    pairs = [("tok_emb.weight", "transformer.wte.weight", False), ("pos_emb.weight", "transformer.wpe.weight", False),
             ("ln_f.weight", "transformer.ln_f.weight", False), ("ln_f.bias", "transformer.ln_f.bias", False)]
    for i in range(n_layer):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        pairs += [(b + "ln1.weight", h + "ln_1.weight", False), (b + "ln1.bias", h + "ln_1.bias", False),
                  (b + "attn.qkv.weight", h + "attn.c_attn.weight", True),
                  (b + "attn.proj.weight", h + "attn.c_proj.weight", True),
                  (b + "attn.proj.bias", h + "attn.c_proj.bias", False),
                  (b + "ln2.weight", h + "ln_2.weight", False), (b + "ln2.bias", h + "ln_2.bias", False),
                  (b + "mlp.0.weight", h + "mlp.c_fc.weight", True), (b + "mlp.0.bias", h + "mlp.c_fc.bias", False),
                  (b + "mlp.2.weight", h + "mlp.c_proj.weight", True), (b + "mlp.2.bias", h + "mlp.c_proj.bias", False)]
    return pairs


def _gpt2_state(model: CharTransformer) -> dict[str, torch.Tensor]:
    s = {k: v.detach() for k, v in model.state_dict().items()}
    out = {gpt2: (s[mine].T if transposed else s[mine]).contiguous()
           for mine, gpt2, transposed in _name_pairs(model.config.n_layer)}
    for i in range(model.config.n_layer):  # CharTransformer's qkv has no bias; GPT-2's c_attn has one
        out[f"transformer.h.{i}.attn.c_attn.bias"] = torch.zeros(3 * model.config.d_model)
    out["lm_head.weight"] = s["tok_emb.weight"] if model.head is None else s["head.weight"]
    return out


def to_hf(model: CharTransformer) -> Any:
    """``model`` as a ``transformers`` ``GPT2LMHeadModel`` with the same weights, in eval mode: its logits equal
    ``model``'s to float tolerance (introduced in 12_distill_language_model). GPT-2's query, key and value biases,
    which CharTransformer lacks, are zero and frozen, so that a trained copy still converts back."""
    hf = _transformers().GPT2LMHeadModel(hf_config(model))
    missing, unexpected = hf.load_state_dict(_gpt2_state(model), strict=False)
    # the causal-mask buffers some versions register are not weights; anything else unmatched is a mapping error
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise RuntimeError(f"GPT-2 weights not matched: missing {missing}, unexpected {unexpected}")
    for block in hf.transformer.h:  # frozen at 0: trained, the copy stays a CharTransformer (from_hf)
        block.attn.c_attn.bias.requires_grad_(False)
    return hf.eval()


def from_hf(hf_model: Any) -> CharTransformer:
    """A ``GPT2LMHeadModel`` of :func:`to_hf`'s shape (exact GELU, no attention bias) back as a
    :class:`CharTransformer`, so that labkit's metrics read a model TRL trained (12_distill_language_model)."""
    if type(hf_model).__name__ != "GPT2LMHeadModel":
        raise ValueError(f"from_hf got a {type(hf_model).__name__}: it converts a GPT2LMHeadModel of to_hf's shape")
    c = hf_model.config
    differs = {k: getattr(c, k) for k, v in (("layer_norm_epsilon", 1e-5), ("scale_attn_weights", True),
                                              ("scale_attn_by_inverse_layer_idx", False),
                                              ("reorder_and_upcast_attn", False))
               if getattr(c, k, v) != v}
    if differs:
        raise ValueError(f"only GPT-2 models of to_hf's shape convert back: CharTransformer cannot hold {differs} "
                         "(to_hf writes layer_norm_epsilon=1e-5 and scaled attention)")
    if c.activation_function != "gelu" or (c.n_inner or 4 * c.n_embd) != 4 * c.n_embd:
        raise ValueError(f"only GPT-2 models of to_hf's shape convert back (exact GELU, 4x MLP), got "
                         f"{c.activation_function!r} and n_inner={c.n_inner}")
    s = {k: v.detach() for k, v in hf_model.state_dict().items()}
    if any(s[f"transformer.h.{i}.attn.c_attn.bias"].abs().max() > 0 for i in range(c.n_layer)):
        raise ValueError("the attention's query, key and value have biases, which CharTransformer lacks")
    model = CharTransformer(LMConfig(c.vocab_size, context=c.n_positions, n_layer=c.n_layer, n_head=c.n_head,
                                     d_model=c.n_embd, dropout=c.resid_pdrop, tie_weights=c.tie_word_embeddings))
    state = {mine: (s[gpt2].T if transposed else s[gpt2]).contiguous()
             for mine, gpt2, transposed in _name_pairs(c.n_layer)}
    if model.head is not None:
        state["head.weight"] = s["lm_head.weight"]
    model.load_state_dict(state)
    return model.eval()


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
