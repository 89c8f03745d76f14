"""End to end: the temperature slider of 02_temperature, run in JupyterLab and moved in a real (headless) Chromium.

Starts JupyterLab from this environment on a free localhost port with a random token, serving a temporary copy
of the notebook (so the committed one is never saved over), runs all cells from the Run menu, drags the slider
to the right and checks that the entropy readout follows. Screenshots before and after go to ``$LABKIT_ARTIFACTS``
(default ``test-artifacts/``). Needs Playwright (the ``browser`` extra) and a Chromium on the machine (Debian:
``apt-get install chromium``; another binary: ``LABKIT_CHROMIUM=/path``). Without them the test is skipped, with
the reason, except under CI (``CI`` set), where it fails; ``LABKIT_NO_BROWSER=1`` skips it anywhere.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_temperature.ipynb"
# The explorer's HTML readout, e.g. "T = 2.00: entropy 2.345 bits (one-hot 0, uniform 3.322); top class cat 45.0%, ..."
READOUT = re.compile(r"T = ([\d.]+): entropy ([\d.]+) bits .*top class (\w+) ([\d.]+)%")


def _parse(readout: str) -> tuple[float, float, str, float]:
    """T, entropy (bits), top class and its share (%) from the explorer's readout text."""
    found = READOUT.search(readout)
    assert found, f"unexpected readout: {readout!r}"
    return float(found[1]), float(found[2]), found[3], float(found[4])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory: pytest.TempPathFactory):
    """URL (with token) of the notebook's copy in a JupyterLab started from this environment; stopped afterwards."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOK, root)
    settings = {
        # No update check or news prompt: CI is offline, and the prompt's toast would sit in the screenshots.
        "apputils-extension/notification": {"checkForUpdates": False, "fetchNews": "false"},
        # Lay out every cell (the default, content-visibility, estimates the sizes of cells out of view, so
        # scrolling to the explorer lands somewhere else).
        "notebook-extension/tracker": {"windowingMode": "none"},
    }
    for name, values in settings.items():
        path = home / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, LABKIT_QUICK="1",  # the test is about the widget, not the numbers: keep the run short
               # Fresh settings and a throw-away workspace: the user's own ~/.jupyter neither steers nor records it.
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(home / "jupyterlab.log", "wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(home / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}"
    finally:
        server.terminate()  # jupyter_server shuts its kernels down on SIGTERM
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_temperature_slider_in_jupyterlab(page, lab_url: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    page.goto(lab_url)
    # Run All before the kernel is up opens a "Select Kernel" dialog: wait for the notebook's own kernel first.
    kernel_idle = page.locator("#jp-main-statusbar", has_text="Python 3 (ipykernel) | Idle")
    expect(kernel_idle).to_be_visible(timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()

    # The notebook's last check cell prints the readout after putting the slider back at T = 2: all cells ran.
    done = page.locator(".jp-OutputArea-output", has_text="<b>T = 2.00</b>: entropy")
    failed = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
    done.or_(failed).first.wait_for(state="attached", timeout=300_000)
    assert failed.count() == 0, f"a cell failed in JupyterLab:\n{failed.first.inner_text()}"
    # The exercise cells after it too; on a busy 2-core machine they took more than playwright's default 5 s.
    expect(page.locator(".jp-InputPrompt", has_text="[*]")).to_have_count(0, timeout=120_000)

    readout = page.locator(".widget-html-content", has_text="bits (one-hot 0")
    explorer = page.locator(".widget-vbox", has=readout)
    expect(readout).to_contain_text("T = 2.00")
    explorer.evaluate("e => e.scrollIntoView({block: 'center'})")  # slider, readout and bars all in the screenshots
    before = readout.inner_text()
    plot_before = explorer.locator(".widget-output img").get_attribute("src")
    page.screenshot(path=artifacts / "temperature_lab_before.png")

    # Drag the handle, as a learner would, to 85% of the log-scale track (T from 0.1 to 20: T = 9 or so).
    handle, track = explorer.locator(".noUi-handle").bounding_box(), explorer.locator(".noUi-target").bounding_box()
    y = handle["y"] + handle["height"] / 2
    page.mouse.move(handle["x"] + handle["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(track["x"] + 0.85 * track["width"], y, steps=10)
    page.mouse.up()  # the slider has continuous_update=False: the kernel recomputes on release

    expect(readout).not_to_contain_text("T = 2.00", timeout=60_000)
    expect(explorer.locator(".widget-output img")).not_to_have_attribute("src", plot_before)  # bars redrawn
    after = readout.inner_text()
    page.screenshot(path=artifacts / "temperature_lab_after.png")

    (T0, H0, top0, share0), (T1, H1, top1, share1) = _parse(before), _parse(after)
    assert explorer.locator(".widget-readout").inner_text() == f"{T1:.2f}", "readout and slider disagree on T"
    assert 6 < T1 < 13, f"dragging to 85% of the track should give T of about 9, got {T1} (from {T0})"
    assert H1 > H0, f"entropy should rise with T: {H0} bits at T = {T0}, {H1} bits at T = {T1}"
    assert top1 == top0 and share1 < share0, f"higher T flattens the top class: {before!r} -> {after!r}"
