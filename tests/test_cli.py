"""The labkit command line: help texts and a --quick run of every command on real data."""

from __future__ import annotations

import json
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
