"""Train the character-level teacher of notebooks/12_distill_language_model.ipynb and ship it with its model card.

    python benchmarks/lm_teacher.py [--resume] [--quick]

The project's own recipe, :func:`labkit.lm.train_lm`: next-token cross-entropy on the training topics of Python's
documentation (:func:`labkit.lm.load_corpus`: the ``pydoc_data.topics`` text of Python 3.11.7, shipped in labkit,
under the PSF License; about 420,000 training characters), random windows of 128 characters, batch 32, AdamW at 2e-3
with a linear warm-up over 100 steps and a cosine decay to a tenth, weight decay 0.1, gradients clipped to norm 1,
seed 0.
The model is a 4-layer transformer of width 128 (4 heads, context 128, about 0.8 M parameters) with dropout 0.1,
since 2,000 steps read about 20 times as many characters as the training text holds. Its training time on 2 CPU
cores is in the model card (labkit/weights/lm_teacher.md).

Every 100 steps a row of the learning curve (training loss, bits per character of the first 16,000 held-out
characters) is kept and a checkpoint written to runs/lm_teacher/; ``--resume`` continues an interrupted run from
its last checkpoint and reproduces the uninterrupted one (the wall time of every part is added up). At the end the
weights are written as float16 safetensors to labkit/weights/lm_teacher.safetensors, read back, and that file's
bits per character on all the held-out topics measured; the model card labkit/weights/lm_teacher.md and
benchmarks/results/lm_teacher.json hold the numbers. The printed sha256 goes into LM_TEACHER_SHA256 in
labkit/lm/store.py, which load_lm_teacher() checks.

``--quick`` (or LABKIT_QUICK=1) trains a tiny model for 30 steps, in seconds, and writes everything under
runs/lm_teacher_quick/ and to benchmarks/results/lm_teacher_quick.json: a smoke test that never touches the
shipped file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from _common import machine
from labkit import lm
from labkit.atomic import write_text_atomic
from labkit.pretrained import WEIGHTS_DIR
from labkit.settings import QUICK_ENV, quick_mode

ROOT = Path(__file__).resolve().parents[1]
# The shipped teacher: LMConfig fields (besides the vocabulary), the training settings and the batch size.
TEACHER = dict(context=128, n_layer=4, n_head=4, d_model=128, dropout=0.1)
TRAIN = lm.LMTrainConfig(steps=2000, lr=2e-3, final_lr=0.1, warmup_steps=100, weight_decay=0.1, grad_clip=1.0,
                         seed=0, log_every=100, checkpoint_every=100)
BATCH = 32
EVAL_CHARS = 16_000  # held-out characters scored at every row of the learning curve
# --quick: the same code on a model that trains in seconds.
QUICK_TEACHER = dict(context=32, n_layer=1, n_head=2, d_model=32, dropout=0.1)
QUICK_TRAIN = lm.LMTrainConfig(steps=30, warmup_steps=5, seed=0, log_every=10, checkpoint_every=10)
QUICK_BATCH = 8
SAMPLE_PROMPTS = ("The ", "A list ")
SAMPLE_CHARS = 200


def train_teacher(model_kwargs: dict, config: lm.LMTrainConfig, batch_size: int, *, run_dir: Path,
                  weights: Path, card: Path, results: Path, resume: bool = False, progress: bool = True,
                  command: str = "python benchmarks/lm_teacher.py", eval_chars: int = EVAL_CHARS) -> dict:
    """Train a teacher of ``model_kwargs`` with ``config``, write its weights, model card and results; return them.

    Checkpoints and the running wall time go to ``run_dir``; the float16 weights to ``weights``, the model card
    to ``card`` and the results JSON to ``results``. Tests call it with a tiny model and temporary paths.
    """
    corpus = lm.load_corpus()
    tokenizer = lm.CharTokenizer.from_text(corpus.train)
    train_ids, held_ids = tokenizer.encode(corpus.train), tokenizer.encode(corpus.held_out)
    monitor = held_ids[:eval_chars]
    torch.manual_seed(config.seed)
    model = lm.CharTransformer(lm.LMConfig(tokenizer.vocab_size, **model_kwargs))
    context = model.config.context

    run_dir = Path(run_dir)
    timing_file = run_dir / "wall_time.json"
    timing = {"seconds": 0.0, "step": 0, "parts": 0, "exact": True}
    if resume and timing_file.is_file() and (run_dir / "checkpoint.pt").is_file():
        timing = json.loads(timing_file.read_text())
    part_started, resumed_from = time.perf_counter(), []

    def on_step(done: int) -> None:
        # Called after every step, after train_lm's checkpoint: the time up to a checkpoint is saved with it, so a
        # resumed run adds the time of the steps it keeps, not of those lost since the last checkpoint.
        if not resumed_from:
            resumed_from.append(done - 1)
            if resume and done - 1 != timing["step"]:
                timing["exact"] = False  # the timing file does not belong to the checkpoint resumed from
        if done % config.checkpoint_every == 0 or done == config.steps:
            elapsed = timing["seconds"] + time.perf_counter() - part_started
            write_text_atomic(timing_file, json.dumps({**timing, "seconds": elapsed, "step": done,
                                                        "parts": timing["parts"] + 1}))

    history = lm.train_lm(model, lambda g: lm.batch_from_corpus(train_ids, batch_size, context, g),
                          lm.ce_objective, config, out=run_dir, resume=resume, progress=progress, desc="teacher",
                          evaluate=lambda m: {"held_out_bpc_first_chars": lm.bits_per_character(m, monitor)},
                          on_step=on_step)
    if timing_file.is_file():
        timing = json.loads(timing_file.read_text())
    float32_bpc = lm.bits_per_character(model, held_ids)

    sha = lm.save_lm(model, tokenizer, weights, corpus_sha256=corpus.sha256, half=True)
    shipped = lm.load_lm(weights, sha, device="cpu").model  # every number below is the written file's
    generator = torch.Generator().manual_seed(0)
    samples = {prompt: tokenizer.decode(lm.sample(shipped, tokenizer.encode(prompt), SAMPLE_CHARS,
                                                  generator=generator)) for prompt in SAMPLE_PROMPTS}
    unigram = torch.bincount(train_ids, minlength=tokenizer.vocab_size).double() + 1  # add-one: no zero counts
    unigram_bpc = -(unigram / unigram.sum()).log2()[held_ids[1:]].mean().item()
    positions = config.steps * batch_size * context
    payload = {
        "command": command,
        "sha256": sha,
        "file": str(weights.name),
        "file_bytes": weights.stat().st_size,
        "parameters": shipped.num_parameters(),
        "model": asdict(shipped.config),
        "train": asdict(config),
        "batch_size": batch_size,
        "positions_read": positions,
        "eval_chars": len(monitor),
        "epochs": positions / len(train_ids),
        "wall_seconds": timing["seconds"],
        "wall_time_parts": timing["parts"],
        "wall_time_exact": timing["exact"],
        "held_out_bpc": lm.bits_per_character(shipped, held_ids),
        "short_context": min(64, context),
        "held_out_bpc_short_context": lm.bits_per_character(shipped, held_ids, context=min(64, context)),
        "held_out_bpc_float32": float32_bpc,
        "train_bpc_same_length": lm.bits_per_character(shipped, train_ids[:len(held_ids)]),
        "uniform_bpc": math.log2(tokenizer.vocab_size),
        "unigram_bpc": unigram_bpc,
        "vocab_size": tokenizer.vocab_size,
        "corpus": {"source": "pydoc_data.topics.topics", "license": "PSF License Agreement (Python documentation)",
                   "sha256": corpus.sha256, "train_chars": len(corpus.train), "held_out_chars": len(corpus.held_out),
                   "held_out_topics": list(corpus.held_out_topics)},
        "python": platform.python_version(),
        "samples": samples,
        "history": history.rows,
        "machine": machine(),
    }
    write_text_atomic(results, json.dumps(payload, indent=2))
    write_text_atomic(card, model_card(payload))
    return payload


def model_card(r: dict) -> str:
    """The model card of a teacher :func:`train_teacher` wrote, in Markdown."""
    m, t, c = r["model"], r["train"], r["corpus"]
    wall = f"{r['wall_seconds']:,.0f} s ({r['wall_seconds'] / 60:.1f} min) wall"
    if r["wall_time_parts"] > 1:
        wall += f", in {r['wall_time_parts']} parts (resumed)" + ("" if r["wall_time_exact"] else ", approximate")
    rows = ["| step | training loss (nats/char) | held-out bits/char, first characters |", "|---|---|---|"]
    rows += [f"| {h['step']} | {h['loss']:.3f} | {h['held_out_bpc_first_chars']:.3f} |" for h in r["history"]]
    samples = "\n\n".join(f"Prompt {prompt!r}, temperature 1, seed 0:\n\n```text\n{text}\n```"
                          for prompt, text in r["samples"].items())
    return f"""# Model card: the character-level language-model teacher (`{r['file']}`)

The teacher of `notebooks/12_distill_language_model.ipynb`, loaded with `labkit.lm.load_lm_teacher()`:
safetensors (no pickle), float16, checked against the sha256 pinned in `labkit/lm/store.py` (`LM_TEACHER_SHA256`)
before it is read. The vocabulary and the corpus hash are stored in the file's header.

- sha256: `{r['sha256']}` ({r['file_bytes'] / 1e6:.2f} MB)
- Architecture: `labkit.lm.CharTransformer`, {m['n_layer']} pre-LayerNorm transformer blocks of width {m['d_model']},
  {m['n_head']} heads, context {m['context']} characters, dropout {m['dropout']:g}, output head tied to the token
  embedding; {r['parameters']:,} parameters; vocabulary of {r['vocab_size']} (the characters seen at least 5 times in
  the training text, the rest mapped to one unknown id).
- Data: `{c['source']}` of Python 3.11.7, the documentation topics that `help()` shows, shipped inside
  labkit (`labkit/lm/data`, the same text on every Python): no download. Copyright the Python Software Foundation,
  distributed under the {c['license']}. Topics sorted by name; a topic is held out when the sha256 of its name is 0 mod 10
  ({len(c['held_out_topics'])} topics, {c['held_out_chars']:,} characters; {c['train_chars']:,} for training).
  Corpus sha256 `{c['sha256']}`: `labkit.lm.load_corpus` refuses other text, and a damaged copy of the shipped file.
- Command: `{r['command']}` (`labkit.lm.train_lm`: next-token cross-entropy on random windows of {m['context']}
  characters, batch {r['batch_size']}, {t['steps']:,} steps, AdamW at {t['lr']:g} with betas (0.9, 0.95), weight
  decay {t['weight_decay']:g}, linear warm-up over {t['warmup_steps']} steps then cosine decay to {t['final_lr']:g} of
  it, gradients clipped to norm {t['grad_clip']:g}, seed {t['seed']}). {r['positions_read']:,} positions read,
  {r['epochs']:.1f} times the training text.
- Time: {wall} of training (learning-curve evaluations and checkpoints included), on {r['machine']['cpu']} ({r['machine']['torch_threads']} torch threads, torch
  {r['machine']['torch']}), {r['machine']['date']}.

| held-out bits per character (all {len(c['held_out_topics'])} held-out topics) | |
|---|---|
| this file (float16), context {m['context']} | **{r['held_out_bpc']:.4f}** |
| this file, context {r['short_context']} (the students' context in notebook 12) | {r['held_out_bpc_short_context']:.4f} |
| the float32 weights before saving | {r['held_out_bpc_float32']:.4f} |
| training text, as many characters | {r['train_bpc_same_length']:.4f} |
| character frequencies of the training text only (unigram) | {r['unigram_bpc']:.4f} |
| uniform over the vocabulary, log2({r['vocab_size']}) | {r['uniform_bpc']:.4f} |

Bits per character are measured on non-overlapping windows of the context (the first characters of each window
see little context), so they are a little pessimistic; lower is better.

Learning curve (held-out bits per character of the first {r['eval_chars']:,} held-out characters, in eval mode):

{chr(10).join(rows)}

Samples of this file:

{samples}
"""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in runs/")
    parser.add_argument("--quick", action="store_true", help=f"a tiny model in seconds (also set by {QUICK_ENV}=1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    quick = quick_mode()
    name = "lm_teacher" + ("_quick" if quick else "")
    command = "python benchmarks/lm_teacher.py" + (" --quick" if quick else "")
    run_dir = ROOT / "runs" / name
    if quick:  # never the shipped file
        weights, card = run_dir / f"{name}.safetensors", run_dir / f"{name}.md"
    else:
        weights, card = WEIGHTS_DIR / lm.LM_TEACHER_FILE, WEIGHTS_DIR / "lm_teacher.md"
    payload = train_teacher(QUICK_TEACHER if quick else TEACHER, QUICK_TRAIN if quick else TRAIN,
                            QUICK_BATCH if quick else BATCH, run_dir=run_dir, weights=weights, card=card,
                            results=ROOT / "benchmarks" / "results" / f"{name}.json", resume=args.resume,
                            progress=not args.no_progress, command=command)
    print(f"held-out bits per character {payload['held_out_bpc']:.4f} (unigram {payload['unigram_bpc']:.3f}, "
          f"uniform {payload['uniform_bpc']:.3f}); {payload['parameters']:,} parameters; "
          f"{payload['wall_seconds'] / 60:.1f} min")
    print(f"wrote {weights}, {card} and benchmarks/results/{name}.json")
    if not quick and payload["sha256"] == lm.LM_TEACHER_SHA256:
        print(f"sha256 {payload['sha256']}: matches LM_TEACHER_SHA256")
    elif not quick:
        print(f"sha256 {payload['sha256']}: pin it, LM_TEACHER_SHA256 = \"{payload['sha256']}\" in labkit/lm/store.py")
    return payload


if __name__ == "__main__":
    main()
