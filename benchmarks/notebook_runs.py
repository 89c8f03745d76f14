"""Run every notebook top to bottom in a fresh kernel; report wall time and peak memory; optionally keep the outputs.

``make outputs`` runs this in full mode with ``--inplace``: the committed notebooks then carry the outputs of a
real full-mode run of the current code, so they read well on GitHub (without the progress bars, which a live
notebook removes once a cell has run: :func:`drop_progress_bars`). Peak memory is the kernel's: the largest
resident set the Linux kernel recorded for it (VmHWM, including shared library pages) and the largest anonymous
(heap) part seen by sampling every 0.2 s, which is what a Binder-sized memory limit mostly has to hold. It also
records how much of the resident set is CUDA-only libraries (PyPI's torch is a CUDA build even on a CPU machine;
Binder's conda-forge CPU build does not load them).

``--memory-limit MIB`` runs each notebook inside a fresh Linux memory cgroup with that hard limit and no swap,
joined by this process and so by the kernel it starts: what a Binder container's limit does. The kernel is
killed if the notebook needs more memory than the limit can hold once the page cache is reclaimed. It needs root
and a writable cgroup file system (v1 or v2); the page cache is dropped first where allowed, so the library and
data pages a notebook reads are charged to it as in a fresh container.

    python benchmarks/notebook_runs.py [--inplace] [--quick] [--memory-limit 1536] [notebooks/05_distill_student.ipynb ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import importlib.util
import os
import re
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

ROOT = Path(__file__).resolve().parents[1]


def _atomic_module():
    """labkit/atomic.py on its own: importing the labkit package would load PyTorch into this process."""
    spec = importlib.util.spec_from_file_location("labkit_atomic", ROOT / "labkit" / "atomic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_text_atomic = _atomic_module().write_text_atomic
# No PyTorch in this process until the end (see _save): under --memory-limit, library pages it had loaded first
# would be charged to it instead of to the kernel's cgroup.


def _status_mb(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(text.split(f"{field}:")[1].split()[0]) // 1024 if f"{field}:" in text else 0


# Loaded only by PyPI's CUDA build of torch; Binder's conda-forge CPU build has none of them.
CUDA_ONLY_LIBRARIES = ("/nvidia/", "/triton/", "/cuda/bindings/", "libtorch_cuda", "libc10_cuda")


def cuda_library_mb(pid: int) -> int:
    """Resident MB of the CUDA-only shared libraries mapped by process ``pid`` (0 if it is gone)."""
    kb, counting = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    counting = any(part in line for part in CUDA_ONLY_LIBRARIES)
                elif counting and line.startswith("Rss:"):
                    kb += int(line.split()[1])
    except OSError:
        return 0
    return kb // 1024


class KernelMemory:
    """Samples this process's descendants (the kernel) until stopped; keeps the peaks in MB.

    ``cuda_lib_mb`` is the most seen of the CUDA-only libraries' resident pages (sampled every ``smaps_every``-th
    time, as reading smaps is slower): what a CPU build of torch would not load.
    """

    def __init__(self, every_s: float = 0.2, smaps_every: int = 25):
        self.every_s, self.peak_rss_mb, self.peak_anon_mb, self.cuda_lib_mb = every_s, 0, 0, 0
        self.smaps_every = smaps_every
        self.cell, self.peak_rss_cell, self.peak_anon_cell = None, None, None  # cell running at each peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def on_cell_execute(self, cell, cell_index: int, **_) -> None:
        """nbclient hook: remember which cell (index among all cells) runs, so that each peak names one."""
        self.cell = cell_index

    def _run(self) -> None:
        me, tick = psutil.Process(), 0
        while not self._stop.wait(self.every_s):
            tick += 1
            for child in me.children(recursive=True):
                rss, anon = _status_mb(child.pid, "VmHWM"), _status_mb(child.pid, "RssAnon")
                if rss > self.peak_rss_mb:
                    self.peak_rss_mb, self.peak_rss_cell = rss, self.cell
                if anon > self.peak_anon_mb:
                    self.peak_anon_mb, self.peak_anon_cell = anon, self.cell
                if tick % self.smaps_every == 0:
                    self.cuda_lib_mb = max(self.cuda_lib_mb, cuda_library_mb(child.pid))

    def __enter__(self) -> "KernelMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class MemoryLimit:
    """A fresh memory cgroup limited to ``mib`` MiB (swap 0), joined by this process until the block ends.

    Afterwards :attr:`report` holds the limit, the cgroup's peak charge (heap plus the page cache it read), how
    often reclaim was forced by the limit and how many processes the kernel's OOM killer ended.
    """

    def __init__(self, mib: int):
        own = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = [line.split(":", 2)[2] for line in own if line.split(":")[1] == "memory"]
        self.v2 = not v1
        base = Path("/sys/fs/cgroup") if self.v2 else Path("/sys/fs/cgroup/memory")
        self.home = base / (own[0].split(":", 2)[2] if self.v2 else v1[0]).lstrip("/")
        self.path, self.mib, self.report = self.home / f"labkit-notebook-{os.getpid()}", mib, {}

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def __enter__(self) -> "MemoryLimit":
        self.page_cache_dropped = _drop_page_cache()
        self.path.mkdir()
        limit = str(self.mib * 2**20)
        if self.v2:
            self._write("memory.max", limit)
            self._write("memory.swap.max", "0")
        else:
            self._write("memory.limit_in_bytes", limit)
            self._write("memory.swappiness", "0")
        self._write("cgroup.procs", str(os.getpid()))
        return self

    def __exit__(self, *exc) -> None:
        (self.home / "cgroup.procs").write_text(str(os.getpid()))
        read = lambda name: (self.path / name).read_text()
        if self.v2:
            events = dict(line.split() for line in read("memory.events").splitlines())
            peak, hits, kills = int(read("memory.peak")), int(events["max"]), int(events["oom_kill"])
        else:
            oom = dict(line.split() for line in read("memory.oom_control").splitlines())
            peak, hits = int(read("memory.max_usage_in_bytes")), int(read("memory.failcnt"))
            kills = int(oom.get("oom_kill", 0))
        self.path.rmdir()
        self.report = {"memory_limit_mib": self.mib, "cgroup_peak_mib": peak // 2**20, "limit_hits": hits,
                       "oom_kills": kills, "page_cache_dropped": self.page_cache_dropped}


def _drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1")
        return True
    except OSError:
        return False


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MODEL_REFERENCE = re.compile(r"IPY_MODEL_(\w+)")


def _is_progress_bar(state: dict, model_id: str) -> bool:
    """tqdm.notebook's bar: a box of text, a progress bar and text."""
    model = state.get(model_id, {})
    children = [state.get(c.removeprefix("IPY_MODEL_"), {}).get("model_name")
                for c in model.get("state", {}).get("children", [])]
    return model.get("model_name") == "HBoxModel" and children == ["HTMLModel", "FloatProgressModel", "HTMLModel"]


def _models_under(state: dict, model_id: str) -> set[str]:
    found, todo = set(), [model_id]
    while todo:
        current = todo.pop()
        if current in found or current not in state:
            continue
        found.add(current)
        todo += MODEL_REFERENCE.findall(json.dumps(state[current]["state"]))
    return found


def drop_progress_bars(notebook: nbformat.NotebookNode) -> int:
    """Remove the tqdm progress bars from ``notebook``'s outputs and their widget state; returns how many.

    Every labkit bar closes with ``leave=False``, so a live notebook shows none once its cell has run; saved, each
    would still show its first frame as text on GitHub and nbviewer ("epoch 1/3: 0%|"), one line per epoch.
    """
    widgets = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {})
    state = widgets.get("state", {})
    bars = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        ids = [o.get("data", {}).get(WIDGET_VIEW, {}).get("model_id") for o in cell.outputs]
        bars += [i for i in ids if i and _is_progress_bar(state, i)]
        cell.outputs = [o for o, i in zip(cell.outputs, ids) if not (i and _is_progress_bar(state, i))]
    for model_id in set().union(*(_models_under(state, b) for b in bars)):
        del state[model_id]
    return len(bars)


def run_notebook(path: Path, inplace: bool, timeout_s: int, memory_limit_mib: int | None = None,
                 executed: Path | None = None) -> dict:
    notebook = nbformat.read(path, as_version=4)
    memory = KernelMemory()
    client = NotebookClient(notebook, timeout=timeout_s, kernel_name="python3", on_cell_execute=memory.on_cell_execute,
                            resources={"metadata": {"path": str(path.parent)}})
    limit = MemoryLimit(memory_limit_mib) if memory_limit_mib else contextlib.nullcontext()
    started, completed = time.perf_counter(), True
    with limit, memory:
        try:
            client.execute()
        except DeadKernelError:
            if not memory_limit_mib:
                raise
            completed = False  # killed for memory: recorded, and the notebook file is left as it was
    seconds = time.perf_counter() - started
    if completed and (inplace or executed):
        drop_progress_bars(notebook)
        if not inplace:
            executed.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path if inplace else executed / path.name, nbformat.writes(notebook) + "\n")
    return {"notebook": path.name, "minutes": round(seconds / 60, 2), "completed": completed,
            "peak_rss_mb": memory.peak_rss_mb, "peak_anon_mb": memory.peak_anon_mb, "cuda_lib_mb": memory.cuda_lib_mb,
            "peak_rss_cell": memory.peak_rss_cell, "peak_anon_cell": memory.peak_anon_cell,
            "quick": os.environ.get("LABKIT_QUICK") == "1",
            "precision": os.environ.get("LABKIT_PRECISION") or "auto",  # the kernel's setting (labkit.settings)
            # glibc's mmap threshold changes both numbers: 128 KiB cut memory but halved training speed here
            "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
            **(limit.report if memory_limit_mib else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every numbered notebook, in order")
    parser.add_argument("--inplace", action="store_true", help="write the executed notebooks (with outputs) back")
    parser.add_argument("--quick", action="store_true", help="quick mode (LABKIT_QUICK=1) instead of full mode")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell (default %(default)s)")
    parser.add_argument("--memory-limit", type=int, metavar="MIB",
                        help="run each notebook under this hard memory limit (a cgroup; Linux, root)")
    parser.add_argument("--executed", type=Path, metavar="DIR",
                        help="write the executed notebooks (outputs and cell times) to DIR, leaving the committed ones")
    parser.add_argument("--results", default="notebook_runs",
                        help="results file name in benchmarks/results (default %(default)s; _quick added in quick mode)")
    args = parser.parse_args()
    if args.quick:
        os.environ["LABKIT_QUICK"] = "1"
    else:
        os.environ.pop("LABKIT_QUICK", None)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    rows = []
    print(f"{'notebook':<42} {'minutes':>8} {'peak RSS MiB':>13} {'peak heap MiB':>14} {'CUDA libs MiB':>14} "
          f"{'under limit':>12}", flush=True)
    for path in paths:
        row = run_notebook(path, args.inplace, args.timeout, args.memory_limit, args.executed)
        rows.append(row)
        verdict = "-" if not args.memory_limit else "completed" if row["completed"] else "KILLED"
        print(f"{row['notebook']:<42} {row['minutes']:>8.2f} {row['peak_rss_mb']:>13} {row['peak_anon_mb']:>14} "
              f"{row['cuda_lib_mb']:>14} {verdict:>12}", flush=True)
        if not args.memory_limit:  # saved as it goes; under a limit only at the end (PyTorch would load here)
            _save(rows, args.results, args.quick)
    if args.memory_limit:
        _save(rows, args.results, args.quick)


def _save(rows: list[dict], results: str, quick: bool) -> None:
    """Merge into the results file by notebook name, so a rerun of one notebook keeps the others' rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import RESULTS, write_json  # imports PyTorch, for the machine description
    name = f"{results}_quick" if quick else results
    path = RESULTS / f"{name}.json"
    runs = {r["notebook"]: r for r in (json.loads(path.read_text())["runs"] if path.is_file() else [])}
    runs.update({r["notebook"]: r for r in rows})
    write_json(name, {"cpu_count": os.cpu_count(), "runs": [runs[k] for k in sorted(runs)]})


if __name__ == "__main__":
    main()
