"""Fault kinds of the course tools: labkit.cli, labkit.students, labkit.checks, labkit.grade (no kernel started) and
labkit.stats.describe_gain."""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_raw_cell

from labkit import cli, grade, stats
from labkit.checks import (AnswerMissing, CheckFailed, check_distillation_loss, check_half_as_likely,
                           check_label_smoothing, check_loss_parts, check_most_torn, check_numpy_softmax)
from labkit.data import CIFAR10_CLASSES
from labkit.grade import Exercise, GradingError
from labkit.students import StudentCopyError, student_notebook, write_student_copies

fault = pytest.mark.fault


# --- labkit.cli: every bad argument is a usage error (exit 2, message on stderr) before any data is read ------------


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def read(*args, **kwargs):
        raise AssertionError("CIFAR-10 was read before the arguments were checked")
    monkeypatch.setattr(cli, "load_cifar10", read)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """labkit's stderr for ``argv``, which must stop with exit code 2 and no traceback."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "usage: labkit" in err and "Traceback" not in err
    return err


@fault("labkit.cli", "error")
@pytest.mark.parametrize("argv, complaint", [
    (["distill", "--epochs", "abc"], "argument --epochs: 'abc' is not a number"),
    (["distill", "--T", "nan"], "argument --T: must be > 0, got nan"),
    (["distill", "--alpha", "0.5,0.9"], "argument --alpha: '0.5,0.9' is not a number"),
    (["train-teacher", "--threads", "0"], "argument --threads: must be a whole number >= 1, got 0"),
], ids=["epochs-not-a-number", "temperature-nan", "alpha-given-as-a-list", "zero-threads"])
def test_a_bad_number_is_a_usage_error_naming_the_option(argv, complaint, no_data, capsys):
    assert complaint in usage_error(argv, capsys)


@fault("labkit.cli", "error")
def test_fractional_views_asks_for_a_whole_number(no_data, capsys):
    assert "argument --views: must be a whole number >= 0, got 1.5" in usage_error(["distill", "--views", "1.5"],
                                                                                    capsys)


@fault("labkit.cli", "error")
def test_out_that_is_a_file_is_a_usage_error_asking_for_a_folder(tmp_path, no_data, capsys):
    out = tmp_path / "result.json"
    out.write_text("{}")
    err = usage_error(["train-teacher", "--out", str(out)], capsys)
    assert f"--out {out} is a file; give a folder" in err
    assert out.read_text() == "{}"


@fault("labkit.cli", "error")
def test_teacher_that_is_a_folder_is_a_usage_error(tmp_path, no_data, capsys):
    err = usage_error(["distill", "--teacher", str(tmp_path)], capsys)
    assert f"--teacher {tmp_path}" in err and "give 'pretrained' or a .safetensors file" in err


@fault("labkit.cli", "error")
def test_unknown_model_is_a_usage_error_listing_the_models(no_data, capsys):
    err = usage_error(["evaluate", "--model", "resnet9000"], capsys)
    assert "invalid choice: 'resnet9000'" in err and "student_small" in err


@fault("labkit.cli", "error")
def test_misspelt_command_is_a_usage_error_listing_the_commands(no_data, capsys):
    err = usage_error(["distil"], capsys)
    assert "invalid choice: 'distil'" in err and "'distill'" in err


@fault("labkit.cli", "error")
def test_missing_weights_for_evaluate_is_a_usage_error_before_any_data_is_read(tmp_path, no_data, capsys):
    missing = tmp_path / "teacher.safetensors"
    err = usage_error(["evaluate", "--weights", str(missing)], capsys)
    assert f"--weights {missing}" in err and "pretrained" in err


# --- labkit.students: nothing marker-like reaches a student copy, and no copy replaces a notebook ------------------


def copy_of(cell) -> nbformat.NotebookNode:
    return student_notebook(new_notebook(cells=[cell]))


@fault("labkit.students", "error")
@pytest.mark.parametrize("cell", [
    new_code_cell("# BEGIN-SOLUTION\nanswer = 42\n# END-SOLUTION"),
    new_markdown_cell("Why?\n<!-- Begin Solution -->\nBecause 42.\n<!-- End Solution -->"),
    new_raw_cell("<!-- BEGIN SOLUTION -->\nBecause 42.\n<!-- END SOLUTION -->"),
    new_markdown_cell("<!-- BEGIN SOLUTION -->a<!-- BEGIN SOLUTION -->42<!-- END SOLUTION -->b<!-- END SOLUTION -->"),
], ids=["hyphenated-code-markers", "title-case-markdown-markers", "markdown-markers-in-a-raw-cell",
        "nested-markdown-solutions"])
def test_a_marker_left_after_the_solutions_are_removed_is_refused(cell):
    with pytest.raises(StudentCopyError, match=r"cell 0 .*still holds.*write the markers exactly"):
        copy_of(cell)


@fault("labkit.students", "error")
def test_end_before_begin_in_a_code_cell_is_refused():
    with pytest.raises(StudentCopyError, match=r"unbalanced solution markers at '# END SOLUTION'"):
        copy_of(new_code_cell("# END SOLUTION\nanswer = 42\n# BEGIN SOLUTION"))


@fault("labkit.students", "error")
def test_a_misspelt_end_after_a_good_begin_is_refused():
    # The misspelt END would otherwise be swallowed as a solution line and everything after it dropped.
    with pytest.raises(StudentCopyError, match=r"'# BEGIN SOLUTION' without '# END SOLUTION'"):
        copy_of(new_code_cell("# BEGIN SOLUTION\nanswer = 42\n#  END SOLUTION\ncheck(answer)"))


@fault("labkit.students", "handled")
def test_a_stub_without_the_space_after_its_colon_keeps_its_code():
    copy = copy_of(new_code_cell("# BEGIN SOLUTION\n# STUB:answer = None\nanswer = 42\n# END SOLUTION"))
    assert copy.cells[0].source == "answer = None"


def write(path: Path, *sources: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)
    return path


SOLVED = "# BEGIN SOLUTION\n# STUB: answer = None\nanswer = 42\n# END SOLUTION"


@fault("labkit.students", "error")
def test_an_out_folder_that_is_the_notebooks_folder_by_a_symlink_is_refused(tmp_path):
    notebook = write(tmp_path / "course" / "01_x.ipynb", SOLVED)
    before = notebook.read_bytes()
    (tmp_path / "student").symlink_to(tmp_path / "course", target_is_directory=True)
    with pytest.raises(StudentCopyError, match=r"would overwrite the notebook.*choose another --out folder"):
        write_student_copies([notebook], tmp_path / "student")
    assert notebook.read_bytes() == before


@fault("labkit.students", "error")
def test_a_notebook_that_is_not_json_is_refused_by_name_and_nothing_is_written(tmp_path):
    good = write(tmp_path / "01_good.ipynb", "x = 1")
    bad = tmp_path / "02_broken.ipynb"
    bad.write_text("{ not json")
    with pytest.raises(ValueError) as failure:
        write_student_copies([good, bad], tmp_path / "student")
    assert "02_broken.ipynb" in str(failure.value) and "JSON" in str(failure.value)
    assert not (tmp_path / "student").exists()


@fault("labkit.students", "error")
def test_two_notebooks_of_one_name_are_refused_naming_both(tmp_path):
    first, second = write(tmp_path / "a" / "01_x.ipynb", "a = 1"), write(tmp_path / "b" / "01_x.ipynb", "b = 1")
    with pytest.raises(StudentCopyError) as failure:
        write_student_copies([first, second], tmp_path / "student")
    assert str(first) in str(failure.value) and str(second) in str(failure.value)
    assert not (tmp_path / "student").exists()


@fault("labkit.students", "error")
def test_an_out_that_is_a_file_is_refused_asking_for_a_folder(tmp_path):
    notebook = write(tmp_path / "01_x.ipynb", SOLVED)
    out = tmp_path / "student"
    out.write_text("notes")
    with pytest.raises((ValueError, OSError), match=rf"{re.escape(str(out))}.*folder"):
        write_student_copies([notebook], out)
    assert out.read_text() == "notes"


# --- labkit.checks: a stub, a broken function or a malformed answer is a CheckFailed with a hint, never a TypeError -


Z = torch.tensor([2.0, 1.0, 0.0])
LABELS = torch.tensor([0, 3, 9, 1])
SMOOTHED = 0.8 * F.one_hot(LABELS, 10) + 0.02  # epsilon = 0.2 over 10 classes
LOGITS = 2 * torch.randn(200, 10, generator=torch.Generator().manual_seed(0))


def failure(call, *args) -> CheckFailed:
    """The CheckFailed that ``call(*args)`` raises (a TypeError or any other exception fails the test)."""
    with pytest.raises(CheckFailed) as failed:
        call(*args)
    return failed.value


def wrong(call, *args) -> str:
    """The hint of a wrong (not a missing) answer: graded "failed", not "not done"."""
    error = failure(call, *args)
    assert not isinstance(error, AnswerMissing), error
    return str(error)


@fault("labkit.checks", "error")
@pytest.mark.parametrize("stub", [None, ...], ids=["None", "Ellipsis"])
def test_a_stub_left_in_place_is_answer_missing(stub):
    error = failure(check_half_as_likely, stub, Z, 0, 1)
    assert isinstance(error, AnswerMissing) and "`T_half` is still empty: replace the `None`" in str(error)


@fault("labkit.checks", "error")
def test_a_function_that_returns_none_is_answer_missing():
    error = failure(check_numpy_softmax, lambda z, T: None, LOGITS[:5])
    assert isinstance(error, AnswerMissing) and "`numpy_softmax` returned None" in str(error) and "return" in str(error)


@fault("labkit.checks", "error")
def test_a_function_that_raises_is_check_failed_naming_the_error():
    hint = wrong(check_distillation_loss, lambda s, t, y, T, alpha: 1 / 0)
    assert "`my_distillation_loss` raised ZeroDivisionError: division by zero" in hint


@fault("labkit.checks", "error")
def test_a_result_given_where_the_function_is_wanted_is_check_failed():
    assert "`numpy_softmax` should be a function, got ndarray" in wrong(check_numpy_softmax, np.zeros((5, 10)),
                                                                         LOGITS[:5])


@fault("labkit.checks", "error")
def test_a_transposed_answer_is_check_failed_naming_both_shapes():
    assert "expected `smoothed` of shape (4, 10), got (10, 4)" in wrong(check_label_smoothing, SMOOTHED.T, LABELS)


@fault("labkit.checks", "error")
def test_text_where_numbers_are_wanted_is_check_failed_naming_the_type():
    assert "`T_half` should hold numbers" in wrong(check_half_as_likely, "1.44", Z, 0, 1)


@fault("labkit.checks", "error")
def test_a_nan_answer_is_check_failed_saying_nan():
    assert "`T_half` contains NaN or inf" in wrong(check_half_as_likely, math.nan, Z, 0, 1)


@fault("labkit.checks", "error")
def test_a_fractional_image_index_is_check_failed():
    hint = wrong(check_most_torn, 3.5, torch.softmax(LOGITS, 1), list(CIFAR10_CLASSES))
    assert "`torn` should be an image index between 0 and 199, got 3.5" in hint


@fault("labkit.checks", "error")
def test_a_list_where_a_dict_per_alpha_is_wanted_is_check_failed():
    hint = wrong(check_loss_parts, [(1.0, 2.0)], LOGITS[:4], LOGITS[4:8], LABELS, 2.0, (0.0, 1.0))
    assert "`parts` should be a dict with one entry per alpha, keys [0.0, 1.0]" in hint


@fault("labkit.checks", "error")
@pytest.mark.filterwarnings("ignore:Casting complex values:UserWarning")
def test_a_complex_answer_is_check_failed():
    with pytest.raises(CheckFailed, match="real|complex"):
        check_half_as_likely(complex(1 / math.log(2), 0.5), Z, 0, 1)


@fault("labkit.checks", "error")
def test_rows_of_different_lengths_are_check_failed_saying_so():
    assert re.search("length|shape|rows", wrong(check_label_smoothing, [[0.82, 0.02], [0.02]], LABELS))


@fault("labkit.checks", "handled")
def test_a_function_that_changes_its_input_in_place_is_still_graded_right(capsys):
    def numpy_softmax(z, T):
        z /= T  # in place: the check must give every call its own copy of the logits
        z -= z.max(-1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    check_numpy_softmax(numpy_softmax, LOGITS[:5])
    assert "✓ Test passed" in capsys.readouterr().out


@fault("labkit.checks", "handled")
def test_an_answer_that_still_requires_grad_is_graded(capsys):
    check_label_smoothing(SMOOTHED.clone().requires_grad_(), LABELS)
    assert "✓ Test passed" in capsys.readouterr().out


# --- labkit.grade: bad arguments and unreadable submissions, found before (or instead of) starting a kernel --------


LAB = new_notebook(cells=[
    new_code_cell("import math\nimport torch\nz = torch.tensor([2.0, 1.0, 0.0])"),
    new_markdown_cell("### Exercise 1 · Half as likely"),
    new_code_cell("from labkit.checks import check_half_as_likely\n\n# BEGIN SOLUTION\n# STUB: T_half = None\n"
                  "T_half = (z[0] - z[1]).item() / math.log(2)\n# END SOLUTION\ncheck_half_as_likely(T_half, z, 0, 1)"),
])
EXPECTED = [Exercise("Exercise 1", "check_half_as_likely", "check_half_as_likely(T_half, z, 0, 1)")]


@pytest.fixture
def course(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An instructor folder with one lab; grading it here must never start a kernel."""
    def execute(*args, **kwargs):
        raise AssertionError("a kernel was started")
    monkeypatch.setattr(grade, "_execute", execute)
    monkeypatch.setattr(grade, "_check_kernel", lambda: None)
    (tmp_path / "notebooks").mkdir()
    nbformat.write(LAB, tmp_path / "notebooks" / "01_lab.ipynb")
    return tmp_path


def grade_usage_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    return usage_error(["grade", *argv], capsys)


@fault("labkit.grade", "error")
def test_a_missing_submissions_folder_is_a_usage_error(course, capsys):
    out = course / "gradebook.csv"
    err = grade_usage_error([str(course / "submissions"), "--notebooks", str(course / "notebooks"), "--out", str(out)],
                            capsys)
    assert f"{course / 'submissions'}: no such file or folder (give submitted notebooks" in err
    assert not out.exists()


@fault("labkit.grade", "error")
def test_a_folder_holding_only_checkpoint_copies_has_no_notebooks(course):
    checkpoint = course / "submissions" / "ada" / ".ipynb_checkpoints" / "01_lab-checkpoint.ipynb"
    write(checkpoint, "x = 1")
    with pytest.raises(GradingError, match=r"no notebooks \(\.ipynb\) in .*submissions"):
        grade.grade([course / "submissions"], course / "notebooks", progress=False)


@fault("labkit.grade", "error")
def test_a_notebooks_folder_without_numbered_notebooks_asks_for_notebooks(course):
    write(course / "submissions" / "ada" / "01_lab.ipynb", "x = 1")
    write(course / "other" / "lab.ipynb", "x = 1")
    with pytest.raises(GradingError, match=r"no instructor notebooks \(NN_name\.ipynb\) in .*other.*pass --notebooks"):
        grade.grade([course / "submissions"], course / "other", progress=False)


@fault("labkit.grade", "error")
def test_an_instructor_notebook_that_is_not_json_is_refused_by_name(course):
    (course / "notebooks" / "02_broken.ipynb").write_text("{ not json")
    with pytest.raises(GradingError, match="02_broken.ipynb"):
        grade.instructor_exercises(course / "notebooks")


@fault("labkit.grade", "error")
def test_two_copies_of_one_notebook_by_one_student_stop_the_command_before_anything_runs(course, capsys):
    write(course / "submissions" / "ada" / "01_lab.ipynb", "x = 1")
    write(course / "submissions" / "ada" / "01_lab (1).ipynb", "x = 2")
    out = course / "gradebook.csv"
    err = grade_usage_error([str(course / "submissions"), "--notebooks", str(course / "notebooks"), "--out", str(out)],
                            capsys)
    assert "two submissions of notebook 01 by ada" in err and "keep one" in err
    assert not out.exists()


@fault("labkit.grade", "error")
def test_a_time_limit_of_zero_is_a_usage_error(course, capsys):
    err = grade_usage_error([str(course / "submissions"), "--time-limit", "0"], capsys)
    assert "--time-limit must be > 0 seconds, got 0.0" in err


@fault("labkit.grade", "error")
def test_no_python_kernel_asks_to_install_ipykernel(monkeypatch, tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def no_kernel(self, name):
        raise NoSuchKernel(name)
    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", no_kernel)
    with pytest.raises(GradingError, match=r"no Python kernel.*install ipykernel"):
        grade.grade([tmp_path], tmp_path, progress=False)


@fault("labkit.grade", "handled")
@pytest.mark.parametrize("make", [
    lambda path: path.mkdir(),
    lambda path: path.write_bytes(b"\xff\xfe\x00 saved in UTF-16 by an editor"),
    lambda path: path.write_text("[]"),
], ids=["a-folder", "not-utf8", "json-but-not-a-notebook"])
def test_an_unreadable_submission_is_an_unreadable_row_without_a_kernel(course, make):
    path = course / "ada" / "01_lab.ipynb"
    path.parent.mkdir()
    make(path)
    rows = grade.grade_submission(path, "ada", "01_lab.ipynb", EXPECTED, 60, course / "notebooks")
    assert [(r.student, r.exercise, r.status, r.score) for r in rows] == [("ada", "Exercise 1", "unreadable", 0)]
    assert f"{path} is not a notebook" in rows[0].detail


@fault("labkit.grade", "handled")
def test_a_submission_with_an_unexpected_name_is_an_unknown_notebook_row(course):
    write(course / "submissions" / "ada" / "lab_final.ipynb", "x = 1")
    rows = grade.grade([course / "submissions"], course / "notebooks", progress=False)
    assert [(r.student, r.notebook, r.status, r.score) for r in rows] == [("ada", "lab_final.ipynb",
                                                                          "unknown notebook", None)]
    assert "NN_name.ipynb, NN one of 01" in rows[0].detail


# --- labkit.stats.describe_gain: an interval that includes 0 is never worded as a shown gain ----------------------


@fault("labkit.stats", "handled")
def test_a_large_mean_gain_whose_interval_includes_0_is_not_shown():
    gain = stats.paired_gains({"kd": [0.90, 0.50, 0.95, 0.60], "base": [0.50, 0.60, 0.50, 0.55]},
                              [("kd", "base")])["kd - base"]
    assert gain["low"] < 0 < gain["high"] and gain["mean"] > 0.1
    assert stats.describe_gain(gain) == "+20.00 points, 95% interval [-22.60, +62.60]: not shown"
    assert stats.verdict(gain, "kd helps", "a gain of kd is not shown").startswith("a gain of kd is not shown (+20.00")


@fault("labkit.stats", "error")
def test_a_gain_marked_shown_whose_interval_includes_0_is_refused():
    gain = {**stats.paired_interval([0.90, 0.50, 0.95, 0.60], [0.50, 0.60, 0.50, 0.55]), "shown": True}
    with pytest.raises(ValueError, match=r"(?s)shown.*includes 0|includes 0.*shown"):
        stats.describe_gain(gain)
