"""The ``labkit`` command line: train a teacher, distill a student, evaluate weights (introduced in 04_cifar_teacher),
grade students' notebooks (docs/instructors.md).

``train-teacher`` and ``distill`` also run data parallel under ``accelerate launch`` (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import torch

from labkit import grade, models
from labkit.atomic import write_text_atomic
from labkit.data import load_cifar10
from labkit.distributed import processes
from labkit.evaluate import accuracy, expected_calibration_error, predict_logits
from labkit.pretrained import load_pretrained, load_weights, save_weights
from labkit.settings import precision, quick_mode
from labkit.tracking import TensorBoardLogger
from labkit.train import distill, train

QUICK = dict(train_per_class=50, test_per_class=20, epochs=1, batch_size=100)


def _number(kind: type, test: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    """An argparse type: the text as ``kind``, or an argparse error (exit 2) saying what is wanted."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            try:
                float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}") from None
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return parse


POSITIVE = _number(float, lambda v: v > 0, "> 0")
POSITIVE_INT = _number(int, lambda v: v >= 1, "a whole number >= 1")
FRACTION = _number(float, lambda v: 0 <= v <= 1, "in [0, 1]")


class _Given(argparse.Action):
    """Stores the value and notes that it was given, so that --quick's own sizes never replace it."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def _common(p: argparse.ArgumentParser, epochs: float, batch_size: int, out: str) -> None:
    p.add_argument("--data", help="CIFAR-10 folder (default: $LABKIT_DATA, then the cache, then download)")
    p.add_argument("--epochs", type=POSITIVE, default=epochs, action=_Given,
                   help=f"training epochs (default %(default)s; {QUICK['epochs']} with --quick)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=batch_size, action=_Given,
                   help=f"batch size; under accelerate launch, of all processes together (default %(default)s; "
                        f"{QUICK['batch_size']} with --quick)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--out", default=out, help="folder for checkpoint, history.csv, weights (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="also log every epoch to TensorBoard in DIR (needs pip install 'labkit[tensorboard]')")
    p.add_argument("--quick", action="store_true", help="a tiny real-data run in seconds (also set by LABKIT_QUICK=1)")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads (default: torch's choice)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="Knowledge Distillation Lab command line.",
                                     epilog="train-teacher and distill also run data parallel under "
                                            "`accelerate launch -m labkit ...` (docs/scaling.md)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train-teacher", help="train the airbench-style CIFAR-10 teacher from scratch")
    p.add_argument("--model", default="teacher", choices=models.available())
    p.add_argument("--label-smoothing", type=_number(float, lambda v: 0 <= v < 1, "in [0, 1)"), default=0.2,
                   help="label smoothing (default %(default)s)")
    _common(p, epochs=12, batch_size=512, out="runs/teacher")
    p = sub.add_parser("distill", help="distill a student from a teacher (the shipped one by default)")
    p.add_argument("--student", default="student_small", choices=models.available())
    p.add_argument("--teacher", default="pretrained", help="'pretrained' or a .safetensors file of a teacher")
    p.add_argument("--T", type=POSITIVE, default=2.0, help="temperature (default %(default)s)")
    p.add_argument("--alpha", type=FRACTION, default=0.5,
                   help="weight of the teacher's soft term (default %(default)s)")
    p.add_argument("--views", type=_number(int, lambda v: v >= 0, "a whole number >= 0"), default=4,
                   help="cached teacher views; 0 = online teacher (default %(default)s)")
    _common(p, epochs=20, batch_size=512, out="runs/student")
    p = sub.add_parser("evaluate", help="test accuracy of a weights file or a shipped model")
    p.add_argument("--model", default="teacher", choices=models.available())
    p.add_argument("--weights", default="pretrained", help="'pretrained' or a .safetensors file")
    p.add_argument("--data", help="CIFAR-10 folder (default: $LABKIT_DATA, then the cache, then download)")
    p.add_argument("--quick", action="store_true", help="evaluate on 200 test images only")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads (default: torch's choice)")
    grade.add_arguments(sub.add_parser("grade", help="run students' notebooks and write a gradebook of their checks"))
    return parser


def _data(args):
    data = load_cifar10(args.data)
    if args.quick:
        data = data.subset(QUICK["train_per_class"], QUICK["test_per_class"], seed=getattr(args, "seed", 0))
    return data


def _model(arch: str, weights: str) -> torch.nn.Module:
    if weights == "pretrained":
        return load_pretrained(arch)
    return load_weights(models.create(arch), weights).eval()


def _report(model, data, seconds: float | None, history=None, num_processes: int = 1) -> dict:
    result = {"model": getattr(model, "name", type(model).__name__), "parameters": models.count_parameters(model),
              "gflops_per_image": round(models.forward_flops(model) / 1e9, 4), "test_images": len(data.test_labels)}
    for tta in ("none", "flip", "flip_translate"):
        logits = predict_logits(model, data.test_images, tta=tta)
        result[f"test_acc_{tta}"] = round(accuracy(logits, data.test_labels), 4)
        if tta == "none":
            result["ece"] = round(expected_calibration_error(logits, data.test_labels), 4)
    if seconds is not None:
        result["train_seconds"] = round(seconds, 1)
        result["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        result["precision"] = history.precision if history is not None else precision()
        result["processes"] = num_processes
    if history is not None:
        result["final_epoch"] = history.last
    width = max(map(len, result))
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in result.items() if k != "final_epoch"))
    return result


def _finish(model, data, out: Path, started: float, history, num_processes: int) -> None:
    sha = save_weights(model, out / "model.safetensors")
    result = _report(model, data, time.perf_counter() - started, history, num_processes)
    result["weights_sha256"] = sha
    write_text_atomic(out / "result.json", json.dumps(result, indent=2))
    print(f"weights: {out / 'model.safetensors'} (sha256 {sha})")


def _training_size(args) -> tuple[float, int]:
    """Epochs and batch size: those given, else the quick ones with --quick, else the defaults."""
    def size(name: str):
        return QUICK[name] if args.quick and not getattr(args, f"{name}_given", False) else getattr(args, name)
    return size("epochs"), size("batch_size")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # every argument is checked here, before any data or weights are read
    if args.command == "grade":
        try:
            return grade.run(args)
        except grade.GradingError as error:
            parser.error(str(error))
    args.quick = args.quick or quick_mode()
    if args.command != "evaluate" and args.out and Path(args.out).is_file():
        parser.error(f"--out {args.out} is a file; give a folder for the checkpoint, history.csv and weights")
    if args.command == "distill" and args.teacher != "pretrained" and not Path(args.teacher).is_file():
        parser.error(f"--teacher {args.teacher}: no such file (give 'pretrained' or a .safetensors file)")
    if args.command == "evaluate" and args.weights != "pretrained" and not Path(args.weights).is_file():
        parser.error(f"--weights {args.weights}: no such file (give 'pretrained' or a .safetensors file)")
    if args.threads:
        torch.set_num_threads(args.threads)
    parallel = processes()
    with parallel.main_process_first():  # a first run decodes CIFAR-10 into the cache once per machine
        data = _data(args)
    if args.command == "evaluate":
        _report(_model(args.model, args.weights), data, None)
        return 0
    out = Path(args.out)
    epochs, batch = _training_size(args)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    with ExitStack() as logs:  # closes the TensorBoard writer even when training fails
        # rank 0 alone writes the log, as it alone writes history.csv
        callbacks = ([logs.enter_context(TensorBoardLogger(args.tensorboard))]
                     if args.tensorboard and parallel.is_main_process else [])
        if args.command == "train-teacher":
            model = models.create(args.model)
            history = train(model, data, epochs, batch_size=batch, seed=args.seed, out=out, resume=args.resume,
                            label_smoothing=args.label_smoothing, callbacks=callbacks)
        else:
            teacher = _model("teacher", args.teacher)
            model = models.create(args.student)
            history = distill(model, teacher, data, T=args.T, alpha=args.alpha, epochs=epochs, batch_size=batch,
                              teacher_views=args.views, seed=args.seed, out=out, resume=args.resume,
                              callbacks=callbacks)
    if parallel.is_main_process:
        _finish(model.cpu(), data, out, started, history, parallel.num_processes)
    return 0
