"""Notebook 12's distillation arms run twice: by labkit's own loop and by TRL's GKDTrainer, side by side.

    python benchmarks/lm_trl.py [--seeds 0 1 2] [--quick]

Arms (notebook 12's letters) and their TRL settings: b, forward KL on corpus text = GKD lmbda 0, beta 0; d, reverse
KL on the student's own samples = lmbda 1, beta 1; e, JSD 0.5 on its own samples = lmbda 1, beta 0.5 (TRL's beta
means what labkit's does: tests/test_lm_hf.py checks the losses equal). Per seed both implementations start from
the same student weights (a CharTransformer, copied into a GPT-2 with labkit.lm.hf.to_hf) and train for the
notebook's budget (labkit.lm.distill_budget: steps, batch, context, prompt) with the same optimizer (AdamW, betas
0.9 / 0.95, weight decay 0.1, a linear warm-up over a tenth of the steps, cosine decay to a tenth, gradients
clipped to 1), in float32. The corpus arm reads the same windows in both (drawn once from the seed); the on-policy
arms sample from 8-character corpus prompts to the window's end, with their own random draws. The GPT-2 copy reads
at most ``context`` positions, while labkit's windows hold ``context + 1`` tokens (``context`` predictions): TRL's
windows end one token earlier, one prediction fewer per window. The trained GPT-2
comes back as a CharTransformer (labkit.lm.hf.from_hf) and both are measured alike: held-out bits per character,
forward and reverse KL to the teacher on held-out windows, and on their own samples the teacher's bits per
character and the two KLs (labkit.lm.on_policy_metrics). Paired differences (labkit - TRL) over the seeds.

Each finished (seed, arm, implementation) run is kept in benchmarks/kept/lm_trl/ (an interrupted run continues; quick
mode keeps nothing). Writes benchmarks/results/lm_trl.json and .md (quick mode: lm_trl_quick.*, a smoke test of
seconds).
"""

from __future__ import annotations

import functools
import importlib.metadata
import tempfile
import time
from dataclasses import asdict

import torch

from _common import kept_result, write_report
from _lm_common import LMSetup, corpus_windows, lm_benchmark
from labkit import lm
from labkit.lm import hf
from labkit.stats import describe_gain, paired_gains
from labkit.teacher import fingerprint

ARMS = {"b: forward KL, corpus": (0.0, 0.0), "d: reverse KL, on-policy": (1.0, 1.0),
        "e: JSD 0.5, on-policy": (1.0, 0.5)}  # (lmbda, beta) of GKD
LIBRARIES = {name: importlib.metadata.version(name) for name in ("torch", "transformers", "trl")}
METRICS = ("bits_per_character", "forward_kl", "reverse_kl", "own_text_teacher_bpc", "own_text_reverse_kl")


def labkit_arm(arm: str, student: lm.CharTransformer, teacher: lm.CharTransformer, windows: torch.Tensor,
               train_ids: torch.Tensor, budget: lm.DistillBudget, seed: int) -> None:
    objective = {"b": lm.forward_kl, "d": lm.reverse_kl, "e": functools.partial(lm.generalized_jsd, beta=0.5)}[arm[0]]
    if arm[0] == "b":
        steps = iter(windows.split(budget.batch_size))
        batches = lambda g: lm.TokenBatch(next(steps))  # noqa: E731  (the windows TRL reads too)
    else:
        batches = lambda g: lm.batch_from_model_samples(student, train_ids, budget.batch_size, budget.context, g,  # noqa: E731
                                                        prompt_length=budget.prompt_length)
    lm.train_lm(student, batches, lm.teacher_objective(teacher, objective), budget.train_config(seed=seed),
                progress=False)


def trl_arm(arm: str, student: lm.CharTransformer, teacher: lm.CharTransformer, windows: torch.Tensor,
            tokenizer: lm.CharTokenizer, budget: lm.DistillBudget, seed: int) -> lm.CharTransformer:
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    lmbda, beta = ARMS[arm]
    steps = budget.steps
    with tempfile.TemporaryDirectory() as out:
        args = GKDConfig(
            output_dir=out, per_device_train_batch_size=budget.batch_size, max_steps=steps, lmbda=lmbda, beta=beta,
            temperature=1.0, max_new_tokens=budget.context - budget.prompt_length, learning_rate=budget.lr,
            adam_beta2=0.95, weight_decay=0.1, max_grad_norm=1.0, warmup_steps=max(1, steps // 10),
            lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, seed=seed,
            data_seed=seed, report_to=[], bf16=False, use_cpu=True, save_strategy="no", logging_steps=steps,
            gradient_checkpointing=False, disable_dropout=True, disable_tqdm=True)
        gpt2 = hf.to_hf(student).train()
        prompt = 1 if lmbda == 0 else budget.prompt_length  # off-policy: every prediction counts, as in labkit
        trainer = GKDTrainer(model=gpt2, teacher_model=hf.to_hf(teacher), args=args,
                             train_dataset=hf.windows_dataset(windows[:, :budget.context]),
                             processing_class=hf.hf_tokenizer(tokenizer),
                             data_collator=hf.WindowCollator(prompt))
        trainer.train()
    return hf.from_hf(gpt2)


def measure(model: lm.CharTransformer, setup: LMSetup) -> dict[str, float]:
    budget, teacher = setup.budget, setup.teacher
    scores = lm.compare_to_teacher(model, setup.eval_windows, setup.teacher_logits)
    scores["bits_per_character"] = lm.bits_per_character(model, setup.held)
    own = lm.batch_from_model_samples(model, setup.train_ids, budget.samples, budget.context,
                                      torch.Generator().manual_seed(123), prompt_length=budget.prompt_length)
    on_policy = lm.on_policy_metrics(model, teacher, own)
    scores.update(own_text_teacher_bpc=on_policy["teacher_bits_per_character"],
                  own_text_reverse_kl=on_policy["reverse_kl"], own_text_forward_kl=on_policy["forward_kl"])
    return scores


def main() -> None:
    setup = lm_benchmark(__doc__.splitlines()[0])  # float32: TRL's trainer runs in float32 here too
    seeds, quick, budget, teacher, tokenizer = setup.seeds, setup.quick, setup.budget, setup.teacher, setup.tokenizer
    results = {arm: {"labkit": [], "TRL": []} for arm in ARMS}
    seconds = {arm: {"labkit": 0.0, "TRL": 0.0} for arm in ARMS}
    started = time.perf_counter()
    for seed in seeds:
        windows = corpus_windows(setup, seed)
        for arm in ARMS:
            for impl in ("labkit", "TRL"):
                def run() -> dict:
                    torch.manual_seed(seed)
                    student = lm.CharTransformer(budget.student_config(tokenizer.vocab_size))
                    t0 = time.perf_counter()
                    if impl == "labkit":
                        labkit_arm(arm, student, teacher, windows, setup.train_ids, budget, seed)
                    else:
                        student = trl_arm(arm, student, teacher, windows, tokenizer, budget, seed)
                    elapsed = time.perf_counter() - t0
                    return {**measure(student, setup), "seconds": round(elapsed, 1)}

                what = {"seed": seed, "arm": arm, "impl": impl, "budget": asdict(budget),
                        "teacher": fingerprint(teacher)[:16], "libraries": LIBRARIES}
                result = kept_result("lm_trl", f"seed{seed}_{arm[0]}_{impl}", what, run, quick)
                seconds[arm][impl] += result.pop("seconds")
                results[arm][impl].append(result)
                print(f"seed {seed} {arm:<26} {impl:<6} " + ", ".join(
                    f"{k} {v:.3f}" for k, v in results[arm][impl][-1].items()), flush=True)
    gains = {}
    for arm in ARMS:
        for metric in METRICS:
            values = {impl: [r[metric] for r in runs] for impl, runs in results[arm].items()}
            if len(seeds) > 1:
                gains[f"{arm}, {metric}"] = paired_gains(values, [("labkit", "TRL")])["labkit - TRL"]
    payload = {"command": "python benchmarks/lm_trl.py" + (" --quick" if quick else ""), "seeds": seeds,
               "budget": {k: getattr(budget, k) for k in ("steps", "batch_size", "context", "lr", "prompt_length")},
               "arms": {arm: {"lmbda": ARMS[arm][0], "beta": ARMS[arm][1]} for arm in ARMS},
               "results": results, "gains": gains, "seconds": seconds,
               "wall_seconds": round(time.perf_counter() - started, 1)}
    lines = ["| arm | metric (bits) | labkit, mean | TRL, mean | labkit - TRL (paired, per metric) |",
             "|---|---|---|---|---|"]
    for arm in ARMS:
        for metric in METRICS:
            mean = lambda impl: sum(r[metric] for r in results[arm][impl]) / len(seeds)  # noqa: E731
            gain = gains.get(f"{arm}, {metric}")
            lines.append(f"| {arm} | {metric} | {mean('labkit'):.3f} | {mean('TRL'):.3f} | "
                         + (describe_gain(gain, unit=1.0, suffix=" bits") if gain else "one seed") + " |")
    lines += ["", "Seconds per implementation (all seeds): " + "; ".join(
        f"{arm}: labkit {s['labkit']:.0f}, TRL {s['TRL']:.0f}" for arm, s in seconds.items())]
    write_report("lm_trl" + ("_quick" if quick else ""), payload, "Notebook 12's arms: labkit's loop and TRL's GKDTrainer",
                 f"{payload['wall_seconds'] / 60:.1f} min, seeds {seeds}, {budget.steps} steps per arm",
                 "\n".join(lines) + "\n", quick)


if __name__ == "__main__":
    main()
