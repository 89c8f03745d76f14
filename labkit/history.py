"""A small per-epoch results table that plots and saves itself without pandas (introduced in 04_cifar_teacher)."""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Iterable

from labkit.atomic import atomic_path


class History:
    """One row (a dict of numbers) per epoch; columns are read with ``history["test_acc"]``.

    ``precision`` is the precision the run computed in (``"bf16"`` or ``"fp32"``, :func:`labkit.settings.precision`),
    None when unknown; its tables say it, so two runs' numbers are never compared unawares.
    """

    def __init__(self, rows: Iterable[dict] = (), precision: str | None = None):
        self.rows: list[dict] = [dict(r) for r in rows]
        self.precision = precision

    def append(self, row: dict) -> None:
        self.rows.append(dict(row))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, column: str) -> list:
        if not any(column in r for r in self.rows):
            raise KeyError(f"no column {column!r}; columns are {self.columns}")
        return [r.get(column) for r in self.rows]

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.rows for k in r))

    @property
    def last(self) -> dict:
        """The final epoch's row (what a result should quote: never the best epoch picked on test data)."""
        return self.rows[-1]

    def to_dict(self) -> dict[str, list]:
        return {c: self[c] for c in self.columns}

    @classmethod
    def from_dict(cls, columns: dict[str, list]) -> "History":
        """The inverse of :meth:`to_dict`: e.g. the ``history`` of a run record read back from a results JSON."""
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{name} has {n}" for name, n in sorted(lengths.items(), key=lambda kv: kv[1]))
            raise ValueError(f"the history's columns have different lengths ({described} values): the record is "
                             "damaged; rerun the run that wrote it")
        return cls(dict(zip(columns, values)) for values in zip(*columns.values()))

    def to_csv(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        return Path(path)

    @classmethod
    def from_csv(cls, path: str | Path) -> "History":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = []
            for row in reader:
                if None in row.values() or None in row:  # a row cut short, or one with more fields than the header
                    raise ValueError(f"{path}, line {reader.line_num}: the row does not match the header "
                                     f"{reader.fieldnames} (the file was cut or edited); delete it or rerun the training")
                rows.append({k: _number(v) for k, v in row.items()})
        return cls(rows)

    def plot(self, columns: list[str], ax=None, label: str = "", **kwargs):
        """Plot ``columns`` against the epoch number on ``ax`` (a new figure if None); returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(5, 3.2))[1]
        for c in columns:
            ax.plot(self["epoch"], self[c], marker="o", label=f"{label} {c}".strip(), **kwargs)
        ax.set_xlabel("epoch")
        ax.legend()
        return ax

    def _format(self, value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    def _caption(self) -> str:
        return f"computed in {self.precision}" if self.precision else ""

    def __repr__(self) -> str:
        cols = self.columns
        cells = [cols] + [[self._format(r.get(c, "")) for c in cols] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
        table = "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)
        return f"{table}\n({self._caption()})" if self.precision else table

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{self._format(r.get(c, ''))}</td>" for c in self.columns) + "</tr>" for r in self.rows
        )
        caption = f"<caption>{html.escape(self._caption())}</caption>" if self.precision else ""
        return f"<table>{caption}<tr>{head}</tr>{body}</table>"


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
