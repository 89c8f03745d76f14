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
