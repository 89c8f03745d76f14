"""What every check shares: the failure type, the pass message and the answer parsers."""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, Callable

import torch
from scipy.special import rel_entr, softmax

from labkit.settings import GRADE_LOG_ENV


class CheckFailed(AssertionError):
    """An exercise's answer is missing or wrong; the message says what to look at."""


class AnswerMissing(CheckFailed):
    """The answer is still the stub the student copy holds (None, ``...``, a function that returns None): a
    gradebook (labkit.grade) says "not done" rather than "failed"."""


def _record(check: Callable, error: BaseException | None) -> None:
    """Append ``check``'s outcome to the file named by ``$LABKIT_GRADE_LOG``, if set."""
    log = os.environ.get(GRADE_LOG_ENV)
    if not log:
        return
    if error is None:
        status, message = "passed", ""
    elif isinstance(error, CheckFailed):
        status, message = ("not done" if isinstance(error, AnswerMissing) else "failed"), str(error)
    else:
        status, message = "error", f"{type(error).__name__}: {error}"
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps({"check": check.__name__, "status": status, "message": message}) + "\n")


def recorded(check: Callable) -> Callable:
    """``check`` that also records its outcome when ``$LABKIT_GRADE_LOG`` is set (labkit.grade sets it in the
    kernel of each graded notebook); otherwise the check is unchanged."""
    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = check(*args, **kwargs)
        except BaseException as error:  # an interrupted check (the grader's time limit) is recorded too
            _record(check, error)
            raise
        _record(check, None)
        return result
    return run


def _passed(what: str) -> None:
    print(f"✓ Test passed: {what}")


def _given(answer: Any, name: str) -> Any:
    if answer is None or answer is Ellipsis:
        raise AnswerMissing(f"`{name}` is still empty: replace the `None` with your answer and run the cell again")
    return answer


def _tensor(answer: Any, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``answer`` as a float64 tensor (from a tensor, array, list or number), or a CheckFailed saying why not."""
    _given(answer, name)
    try:
        if isinstance(answer, (list, tuple)):
            rows = [torch.as_tensor(x) for x in answer]
            if len({tuple(r.shape) for r in rows}) > 1:
                raise CheckFailed(f"the rows of `{name}` have different lengths "
                                  f"({sorted({tuple(r.shape) for r in rows})}): give one value per entry in each row")
            dtype = torch.complex128 if any(r.is_complex() for r in rows) else torch.float64
            t = torch.stack([r.to(dtype) for r in rows]) if rows else torch.zeros(0)
        else:
            t = torch.as_tensor(answer).detach()
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailed(f"`{name}` should hold numbers (a tensor, array, list or number), "
                          f"got {type(answer).__name__}") from None
    if t.is_complex():
        raise CheckFailed(f"`{name}` holds complex numbers: the answer is real (check for a square root or a log of a "
                          "negative number)")
    t = t.to(torch.float64)
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise CheckFailed(f"expected `{name}` of shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def _number(answer: Any, name: str) -> float:
    return _tensor(answer, name, shape=()).item()


def _compare(answer: Any, expected: Any, name: str, mistakes: dict[str, Any] | None = None,
             rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Return if ``answer`` matches ``expected``; else raise the hint of the first mistake whose value it matches."""
    expected = torch.as_tensor(expected, dtype=torch.float64)
    answer = _tensor(answer, name, shape=tuple(expected.shape))

    def close(value: Any) -> bool:
        return torch.allclose(answer, torch.as_tensor(value, dtype=torch.float64), rtol, atol, equal_nan=True)

    if close(expected):
        return
    for hint, value in (mistakes or {}).items():
        if torch.as_tensor(value).shape == answer.shape and close(value):
            raise CheckFailed(f"`{name}`: {hint}")
    if not torch.isfinite(answer).all():
        raise CheckFailed(f"`{name}` contains NaN or inf where the expected values are finite")
    gap = (answer - expected).abs().nan_to_num(math.inf).max().item()
    raise CheckFailed(f"`{name}` is not right yet: it differs from the expected value by up to {gap:.3g}")


def _call(fn: Any, name: str, *args: Any) -> Any:
    """Call the learner's function; a missing function, an exception or a ``None`` result becomes a hint."""
    if not callable(fn):
        raise CheckFailed(f"`{name}` should be a function, got {type(fn).__name__}")
    try:
        out = fn(*args)
    except Exception as err:  # any bug in the learner's code is reported, not re-raised
        raise CheckFailed(f"`{name}` raised {type(err).__name__}: {err}") from err
    if out is None:
        raise AnswerMissing(f"`{name}` returned None: write its body and `return` the result")
    return out


def _index(answer: Any, name: str, n: int) -> int:
    value = _number(answer, name)
    if not (0 <= value < n and value == int(value)):  # also rejects NaN
        raise CheckFailed(f"`{name}` should be an image index between 0 and {n - 1}, got {value:g}")
    return int(value)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Batch-mean KL(p || q) with SciPy, independent of labkit's and PyTorch's implementations."""
    return torch.tensor(rel_entr(p.detach().double().numpy(), q.detach().double().numpy()).sum(-1).mean())


def _soft(logits: torch.Tensor, T: float) -> torch.Tensor:
    return torch.from_numpy(softmax(logits.detach().double().numpy() / T, axis=-1))


def _class_means(p: torch.Tensor, groups: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Row c: the mean of ``p`` over the rows with ``groups == c`` among ``keep`` (NaN when there are none)."""
    return torch.stack([p[keep & (groups == c)].double().mean(0) for c in range(p.shape[1])])
