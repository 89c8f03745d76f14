"""Top-k logit caching, measured: notebook 12's forward-KL student trained from the teacher's top-k store.

    python benchmarks/lm_topk.py [--seeds 0 1 2] [--quick]

Offline distillation of a large language model stores the teacher's k most likely tokens per position instead of
its whole distribution (labkit.lm.topk). Here, for k = 1, 5, 20 and the full vocabulary, a fresh student (per seed
the same initial weights for every k) trains for notebook 12's budget (labkit.lm.distill_budget: steps, batch,
context, learning rate) on the same corpus windows, with labkit.lm.top_k_forward_kl against the store's targets
(renormalised over the kept tokens: labkit/lm/topk.py says why), in float32. The targets are computed batch by batch
from the teacher, the same numbers a stored file would hold; at the full vocabulary the loss is exactly labkit.lm's
forward KL. Per k: the store's bytes per token (float16 log-probabilities and 2-byte ids), its truncation KL from the
full teacher and the teacher's mass it keeps (on the held-out windows), and the student's held-out bits per
character and forward KL to the teacher; paired differences from the full store over the seeds, Holm-corrected (the
three comparisons share the seeds).

Each finished (seed, k) run is kept in benchmarks/kept/lm_topk/ (an interrupted run continues; quick mode keeps
nothing). Writes benchmarks/results/lm_topk.json and .md (quick mode: lm_topk_quick.*, a smoke test of seconds).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict

import torch

from _common import kept_result, write_report
from _lm_common import corpus_windows, lm_benchmark
from labkit import lm
from labkit.stats import describe_gain, paired_gains
from labkit.teacher import fingerprint

KS = (1, 5, 20)  # and the full vocabulary
LN2 = math.log(2)


def store_objective(teacher: lm.CharTransformer, k: int) -> lm.Objective:
    def top_k_store_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return lm.top_k_forward_kl(student_logits, lm.top_k_targets(teacher_logits, k))
    return lm.teacher_objective(teacher, top_k_store_kl)


def train_one(k: int, seed: int, teacher: lm.CharTransformer, vocab: int, windows: torch.Tensor,
              budget: lm.DistillBudget, eval_windows: lm.TokenBatch, teacher_logits: torch.Tensor) -> dict:
    torch.manual_seed(seed)
    student = lm.CharTransformer(budget.student_config(vocab))
    steps = iter(windows.split(budget.batch_size))
    started = time.perf_counter()
    lm.train_lm(student, lambda g: lm.TokenBatch(next(steps)), store_objective(teacher, k),
                budget.train_config(seed=seed), progress=False)
    scores = lm.compare_to_teacher(student, eval_windows, teacher_logits)
    return {"bits_per_character": scores["bits_per_character"], "forward_kl": scores["forward_kl"],
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    setup = lm_benchmark(__doc__.splitlines()[0])
    seeds, quick, budget, teacher, tokenizer = setup.seeds, setup.quick, setup.budget, setup.teacher, setup.tokenizer
    eval_windows, teacher_logits = setup.eval_windows, setup.teacher_logits
    vocab = tokenizer.vocab_size
    ks = [*KS, vocab]
    names = {k: "full" if k == vocab else f"k={k}" for k in ks}
    stores = {}
    for k in ks:
        targets = lm.top_k_targets(teacher_logits, k)
        stores[names[k]] = {"k": k, "bytes_per_token": lm.bytes_per_token(k, vocab),
                            "truncation_kl_bits": lm.truncation_kl(targets) / LN2,
                            "kept_mass": lm.kept_mass(targets).mean().item()}
    started = time.perf_counter()
    runs = {names[k]: [] for k in ks}
    for seed in seeds:
        windows = corpus_windows(setup, seed)
        for k in ks:
            what = {"seed": seed, "k": k, "budget": asdict(budget), "teacher": fingerprint(teacher)[:16]}
            runs[names[k]].append(kept_result("lm_topk", f"seed{seed}_{names[k].replace('=', '')}", what,
                                              lambda: train_one(k, seed, teacher, vocab, windows, budget,
                                                                eval_windows, teacher_logits), quick))
            print(f"seed {seed} {names[k]:<6} " + ", ".join(f"{m} {v:.3f}" for m, v in runs[names[k]][-1].items()),
                  flush=True)
    gains = {}
    if len(seeds) > 1:
        for metric in ("bits_per_character", "forward_kl"):
            values = {name: [r[metric] for r in rs] for name, rs in runs.items()}
            gains[metric] = paired_gains(values, [(names[k], "full") for k in KS])
    payload = {"command": "python benchmarks/lm_topk.py" + (" --quick" if quick else ""), "seeds": seeds,
               "vocab_size": vocab,
               "budget": {k: getattr(budget, k) for k in ("steps", "batch_size", "context", "lr")},
               "stores": stores, "runs": runs, "gains": gains, "wall_seconds": round(time.perf_counter() - started, 1)}
    lines = ["| store | bytes per token | truncation KL (bits) | teacher mass kept | student bits/char, mean | "
             "student forward KL (bits), mean | bits/char minus the full store's (paired) |",
             "|---|---|---|---|---|---|---|"]
    for name, store in stores.items():
        mean = lambda m: sum(r[m] for r in runs[name]) / len(runs[name])  # noqa: E731
        gain = gains.get("bits_per_character", {}).get(f"{name} - full")
        lines.append(f"| {name} | {store['bytes_per_token']} | {store['truncation_kl_bits']:.3f} | "
                     f"{store['kept_mass']:.3f} | {mean('bits_per_character'):.3f} | {mean('forward_kl'):.3f} | "
                     + (describe_gain(gain, unit=1.0, suffix=" bits") if gain else "-") + " |")
    write_report("lm_topk" + ("_quick" if quick else ""), payload,
                 "Top-k logit caching: notebook 12's forward-KL student from the teacher's top-k store",
                 f"{payload['wall_seconds'] / 60:.1f} min, seeds {seeds}, {budget.steps} steps of {budget.batch_size} "
                 f"windows per run, vocabulary {vocab}", "\n".join(lines) + "\n", quick)


if __name__ == "__main__":
    main()
