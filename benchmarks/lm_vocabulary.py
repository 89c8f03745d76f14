"""A student with another vocabulary than its teacher's: the error a per-token KL gives, and two ways out, measured.

    python benchmarks/lm_vocabulary.py [--seeds 0 1 2] [--quick]

The student reads case-folded text: its vocabulary is the lowercased corpus's characters (labkit.lm.CharTokenizer
from the lowercased training text), a subset of the teacher's. Its text is the teacher's ids sent through
labkit.lm.vocabulary_map(teacher, student, str.lower), so both read the same positions. labkit.lm.forward_kl between
the two refuses (the error is recorded). Three arms of notebook 12's student at its budget (labkit.lm.distill_budget),
per seed the same initial weights and the same corpus windows, in float32:

* **text only**: next-token cross-entropy on the case-folded corpus (no teacher);
* **sequence-level KD**: cross-entropy on the teacher's own text (labkit.lm.model_text, teacher_rows rows written
  once per seed at T = 1), case-folded, as Kim & Rush (2016) train on a teacher's output;
* **projected forward KL**: the forward KL to the teacher's distribution added up per student token
  (labkit.lm.project_to_vocabulary) on the corpus windows.

Measured on the case-folded held-out text: the student's bits per character and its forward KL to the projected
teacher (whose own bits per character are the floor to compare with). Paired differences over the seeds,
Holm-corrected (three comparisons share the seeds). Writes benchmarks/results/lm_vocabulary.json and .md (quick mode:
lm_vocabulary_quick.*, a smoke test of seconds); finished runs are kept in benchmarks/kept/lm_vocabulary/.
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

ARMS = ("text only", "sequence-level KD", "projected forward KL")
LN2 = math.log(2)


def projected_objective(teacher: lm.CharTransformer, mapping: torch.Tensor, vocab: int) -> lm.Objective:
    """Forward KL of the student on the case-folded window to the teacher's projected distribution on the original."""
    teacher.eval()

    def objective(student: torch.nn.Module, batch: lm.TokenBatch) -> torch.Tensor:
        with torch.no_grad():
            target = lm.project_to_vocabulary(teacher(batch.inputs), mapping, vocab)
        return lm.forward_kl(student(mapping[batch.inputs]), target)
    return objective


def folded(batch: lm.TokenBatch, mapping: torch.Tensor) -> lm.TokenBatch:
    return lm.TokenBatch(mapping[batch.tokens], batch.first_target)


def scores(student: lm.CharTransformer, windows: lm.TokenBatch, target: torch.Tensor) -> dict[str, float]:
    logits = lm.window_logits(student, windows)
    return {"bits_per_character": lm.next_token_cross_entropy(logits, windows.targets).item() / LN2,
            "forward_kl": lm.forward_kl(logits, target).item() / LN2}


def main() -> None:
    setup = lm_benchmark(__doc__.splitlines()[0])
    seeds, quick, budget, teacher, tokenizer = setup.seeds, setup.quick, setup.budget, setup.teacher, setup.tokenizer
    corpus, train_ids = setup.corpus, setup.train_ids
    student_tokenizer = lm.CharTokenizer.from_text(corpus.train.lower())
    mapping = lm.vocabulary_map(tokenizer, student_tokenizer, str.lower)
    vocab = student_tokenizer.vocab_size
    eval_windows = folded(setup.eval_windows, mapping)
    target = lm.project_to_vocabulary(setup.teacher_logits, mapping, vocab)
    teacher_floor = lm.next_token_cross_entropy(target, eval_windows.targets).item() / LN2
    student_probe = lm.CharTransformer(budget.student_config(vocab))
    try:
        lm.forward_kl(student_probe(eval_windows.inputs[:2]), setup.teacher_logits[:2])
        error = "none: the per-token KL accepted two vocabularies"
    except lm.VocabularyMismatchError as refused:
        error = f"{type(refused).__name__}: {refused}"
    started = time.perf_counter()
    runs = {arm: [] for arm in ARMS}
    for seed in seeds:
        windows = corpus_windows(setup, seed)
        for arm in ARMS:
            def run() -> dict:
                torch.manual_seed(seed)
                student = lm.CharTransformer(budget.student_config(vocab))
                t0 = time.perf_counter()
                if arm == "sequence-level KD":
                    rows = folded(lm.model_text(teacher, train_ids, budget.teacher_rows, budget.context,
                                                torch.Generator().manual_seed(1000 + seed),
                                                prompt_length=budget.prompt_length, progress=False), mapping)
                    batches, objective = (lambda g: lm.batch_from_rows(rows, budget.batch_size, g)), lm.ce_objective
                else:
                    steps = iter(windows.split(budget.batch_size))
                    if arm == "text only":
                        batches = lambda g: folded(lm.TokenBatch(next(steps)), mapping)  # noqa: E731
                        objective = lm.ce_objective
                    else:
                        batches = lambda g: lm.TokenBatch(next(steps))  # noqa: E731  (the teacher reads them as they are)
                        objective = projected_objective(teacher, mapping, vocab)
                lm.train_lm(student, batches, objective, budget.train_config(seed=seed), progress=False)
                return {**scores(student, eval_windows, target), "seconds": round(time.perf_counter() - t0, 1)}

            what = {"seed": seed, "arm": arm, "budget": asdict(budget), "teacher": fingerprint(teacher)[:16],
                    "student_vocabulary": student_tokenizer.chars}
            runs[arm].append(kept_result("lm_vocabulary", f"seed{seed}_{arm.split()[0]}", what, run, quick))
            print(f"seed {seed} {arm:<22} " + ", ".join(f"{k} {v:.3f}" for k, v in runs[arm][-1].items()), flush=True)
    pairs = [("sequence-level KD", "text only"), ("projected forward KL", "text only"),
             ("projected forward KL", "sequence-level KD")]
    gains = (paired_gains({arm: [r["bits_per_character"] for r in rs] for arm, rs in runs.items()}, pairs)
             if len(seeds) > 1 else {})
    payload = {"command": "python benchmarks/lm_vocabulary.py" + (" --quick" if quick else ""), "seeds": seeds,
               "teacher_vocab_size": tokenizer.vocab_size, "student_vocab_size": vocab, "error": error,
               "projected_teacher_bits_per_character": teacher_floor,
               "budget": {k: getattr(budget, k) for k in ("steps", "batch_size", "context", "lr", "teacher_rows")},
               "runs": runs, "gains": gains, "wall_seconds": round(time.perf_counter() - started, 1)}
    lines = [f"Teacher: {tokenizer.vocab_size} tokens; case-folded student: {vocab} tokens. The per-token KL between "
             f"them: {error}", "",
             "| arm | held-out bits/char (case-folded), mean | forward KL to the projected teacher (bits), mean |",
             "|---|---|---|"]
    for arm, rs in runs.items():
        lines.append(f"| {arm} | {sum(r['bits_per_character'] for r in rs) / len(rs):.3f} | "
                     f"{sum(r['forward_kl'] for r in rs) / len(rs):.3f} |")
    lines += [f"| the teacher, projected | {teacher_floor:.3f} | 0 |", ""]
    lines += [f"- {name}, bits/char: {describe_gain(gain, unit=1.0, suffix=' bits')}" for name, gain in gains.items()]
    write_report("lm_vocabulary" + ("_quick" if quick else ""), payload,
                 "A case-folded student of the language-model teacher: two ways around the vocabulary mismatch",
                 f"{payload['wall_seconds'] / 60:.1f} min, seeds {seeds}, {budget.steps} steps of {budget.batch_size} "
                 "windows per run", "\n".join(lines) + "\n", quick)


if __name__ == "__main__":
    main()
