"""Shared by the benchmark scripts: machine description, a printed table, JSON results and kept runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from labkit.atomic import write_text_atomic
from labkit.results import machine_info as machine  # noqa: F401  (what the scripts record their numbers on)

RESULTS = Path(__file__).parent / "results"
KEPT = Path(__file__).parent / "kept"


def kept_result(folder: str, name: str, what: dict, make: Callable[[], dict], quick: bool) -> dict:
    """``make()``'s JSON-ready result, kept as ``benchmarks/kept/<folder>/<name>_<hash of what>.json`` (``what``:
    everything that decides it), so that an interrupted benchmark continues where it stopped; quick mode keeps
    nothing."""
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = KEPT / folder / f"{name}_{digest}.json"
    if not quick and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["result"]
    result = make()
    if not quick:
        write_text_atomic(path, json.dumps({"what": what, "result": result}, default=str))
    return result


def print_table(rows: list[dict]) -> None:
    """Rows of equal keys as an aligned text table."""
    cols = list(rows[0])
    cells = [cols] + [[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def write_json(name: str, payload: dict) -> Path:
    """Write ``payload`` plus the machine description to ``benchmarks/results/<name>.json``."""
    path = write_text_atomic(RESULTS / f"{name}.json", json.dumps({"machine": machine(), **payload}, indent=2))
    print(f"wrote {path}")
    return path


def write_report(name: str, payload: dict, title: str, about: str, table: str, quick: bool) -> None:
    """``payload`` as ``<name>.json``, and ``table`` under a header (title, the command's ``about`` line and the
    machine) as ``<name>.md``, both in benchmarks/results; the table is printed too."""
    write_json(name, payload)
    print(table)
    m = machine()
    header = (f"# {title}{' (quick mode: not a result)' if quick else ''}\n\n`{payload['command']}`: {about}, on "
              f"{m['cpu']} ({m['torch_threads']} torch threads), {m['date']}.\n\n")
    write_text_atomic(RESULTS / f"{name}.md", header + table)
