"""A missing browser: skipped with its reason on a learner's machine, a failure under CI (tests/conftest.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, no_browser


def test_missing_browser_is_skipped_outside_ci_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("LABKIT_NO_BROWSER", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="No Chromium"):
        no_browser("No Chromium found")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI requires"):
        no_browser("No Chromium found")
    monkeypatch.setenv("LABKIT_NO_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception, match="LABKIT_NO_BROWSER"):
        no_browser("No Chromium found")


def test_jupyterlab_overrides_turn_the_news_off_with_settings_its_schema_knows():
    overrides = json.loads((REPO / ".jupyterlab-overrides.json").read_text())
    notification = overrides["@jupyterlab/apputils-extension:notification"]
    assert notification == {"checkForUpdates": False, "fetchNews": "false"}
    # JupyterLab's application files, installed into the environment with it
    schema = Path(sys.prefix) / "share/jupyter/lab/schemas/@jupyterlab/apputils-extension/notification.json"
    assert set(notification) <= set(json.loads(schema.read_text())["properties"])
