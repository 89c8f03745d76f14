"""benchmarks/notebook_runs.py's memory limit: a process over it is killed and reported, one under it is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

sys.path.insert(0, str(BENCHMARKS))
from notebook_runs import MemoryLimit  # noqa: E402  (the runner imports no PyTorch)

# Run in a fresh interpreter: the process that joins the limited cgroup must be small, as the notebook runner is;
# the child it starts writes every byte of ``MIB`` MiB.
SCRIPT = """
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from notebook_runs import MemoryLimit
ALLOCATE = "import sys; x = bytes([1]) * (int(sys.argv[1]) * 2**20)"
with MemoryLimit(200) as limit:
    child = subprocess.run([sys.executable, "-c", ALLOCATE, sys.argv[2]])
print(json.dumps({"returncode": child.returncode, **limit.report}))
"""


def _cgroups_writable() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0 and os.access(MemoryLimit(1).home, os.W_OK)


@pytest.mark.skipif(not _cgroups_writable(), reason="needs root and a writable memory cgroup (Linux)")
@pytest.mark.parametrize("mib, killed", [(50, False), (400, True)])
def test_memory_limit_kills_what_does_not_fit_and_reports_it(mib, killed):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(BENCHMARKS), str(mib)], capture_output=True, text=True,
                         check=True)
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["memory_limit_mib"] == 200
    assert (report["returncode"] == -9) == killed
    assert (report["oom_kills"] >= 1) == killed
    assert report["cgroup_peak_mib"] <= 200


def _bar_notebook():
    """A notebook with one tqdm bar and one explorer (a slider), as nbclient saves them."""
    import nbformat

    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    state = {"bar": model("HBoxModel", children=["IPY_MODEL_a", "IPY_MODEL_b", "IPY_MODEL_c"], layout="IPY_MODEL_l"),
             "a": model("HTMLModel", value="epoch 1/3"), "b": model("FloatProgressModel", value=87.0),
             "c": model("HTMLModel", value="87/87"), "l": model("LayoutModel"),
             "slider": model("FloatSliderModel", value=1.0, layout="IPY_MODEL_m"), "m": model("LayoutModel")}
    view = "application/vnd.jupyter.widget-view+json"
    cell = nbformat.v4.new_code_cell("train()", outputs=[
        nbformat.v4.new_output("display_data", data={view: {"model_id": "bar"}, "text/plain": "epoch 1/3: 0%|"}),
        nbformat.v4.new_output("stream", name="stdout", text="val_acc 0.80\n"),
        nbformat.v4.new_output("display_data", data={view: {"model_id": "slider"}, "text/plain": "FloatSlider()"})])
    notebook = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell("text")])
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    return notebook


def test_drop_progress_bars_keeps_other_outputs_and_widgets():
    from notebook_runs import drop_progress_bars

    notebook = _bar_notebook()
    assert drop_progress_bars(notebook) == 1
    outputs = notebook.cells[0].outputs
    assert [o.get("text") or o["data"]["text/plain"] for o in outputs] == ["val_acc 0.80\n", "FloatSlider()"]
    assert set(notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]) == {"slider", "m"}
    assert drop_progress_bars(notebook) == 0
