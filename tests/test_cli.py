"""The labkit command line: help texts and a --quick run of every command on real data."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from labkit.cli import main


@pytest.mark.parametrize("command", ["train-teacher", "distill", "evaluate"])
def test_help(command):
    result = subprocess.run([sys.executable, "-m", "labkit", command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--quick" in result.stdout and "usage: labkit" in result.stdout


def test_quick_runs_of_every_command(local_cifar, tmp_path, capsys):
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    assert main(["train-teacher", "--quick", "--out", str(teacher_dir)]) == 0
    result = json.loads((teacher_dir / "result.json").read_text())
    assert result["parameters"] > 1_000_000 and 0 <= result["test_acc_none"] <= 1
    weights = teacher_dir / "model.safetensors"
    assert weights.is_file() and (teacher_dir / "checkpoint.pt").is_file()

    assert main(["distill", "--quick", "--teacher", str(weights), "--out", str(student_dir), "--views", "1"]) == 0
    assert json.loads((student_dir / "result.json").read_text())["model"] == "student_small"
    assert "agreement" in (student_dir / "history.csv").read_text()

    assert main(["evaluate", "--quick", "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "test_acc_flip" in out and "parameters" in out


@pytest.mark.parametrize("arguments, complaint", [
    (["distill", "--T", "-1"], "argument --T: must be > 0"),
    (["distill", "--alpha", "2"], r"argument --alpha: must be in \[0, 1\]"),
    (["distill", "--epochs", "0", "--quick"], "argument --epochs: must be > 0"),
    (["distill", "--batch-size", "0"], "argument --batch-size: must be a whole number >= 1"),
    (["distill", "--views", "-2"], "argument --views: must be a whole number >= 0"),
    (["train-teacher", "--label-smoothing", "1"], r"argument --label-smoothing: must be in \[0, 1\)"),
    (["distill", "--teacher", "missing.safetensors"], "no such file"),
])
def test_bad_arguments_are_usage_errors_before_any_data_is_read(arguments, complaint, capsys, monkeypatch):
    from labkit import cli
    monkeypatch.setattr(cli, "load_cifar10", lambda *a, **k: pytest.fail("data was read before the arguments"))
    with pytest.raises(SystemExit) as stop:
        main(arguments)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "usage: labkit" in err and re.search(complaint, err) and "Traceback" not in err


def test_quick_keeps_the_sizes_given_and_fills_in_the_others():
    from labkit.cli import _training_size, build_parser
    def sizes(*argv):
        args = build_parser().parse_args(["distill", *argv])
        args.quick = "--quick" in argv
        return _training_size(args)
    assert sizes("--quick", "--epochs", "3") == (3.0, 100)
    assert sizes("--quick") == (1, 100)
    assert sizes("--batch-size", "64") == (20.0, 64)
