"""The course website (docs/site/build.py, `make site`): built into a temporary folder and read in headless Chromium.

Every page of the course loads without console errors and shows its title; a notebook with plots shows them as
images; the KL-divergence page renders its math (MathJax, served by the site itself); no internal link is broken;
an interactive explorer shows its default-state figure and says how to run it live; solutions are folded away.
Screenshots of the front page and of notebook 05 go to the test artifacts folder. Needs npm (MathJax comes from the
npm registry on the first build) and the browser of tests/test_temperature_lab_browser.py.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import nbformat
import pytest

from conftest import REPO, no_browser

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("npm") is None:
        no_browser("npm not found: the site's build installs MathJax with it (Debian: apt-get install npm)")
    out = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, str(REPO / "docs" / "site" / "build.py"), "--out", str(out)], check=True,
                   capture_output=True)
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def base_url(site: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _title(path: Path) -> str:
    first = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
    return first.lstrip("# ").strip()


def _has_plot(path: Path) -> bool:
    return any("image/png" in o.get("data", {}) for c in nbformat.read(path, as_version=4).cells
               if c.cell_type == "code" for o in c.get("outputs", []))


def test_every_page_loads_with_its_title_plots_and_no_console_errors(page, base_url: str, site: Path, artifacts: Path):
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{page.url}: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)  # see "response"
    page.on("response", lambda r: errors.append(f"{page.url}: {r.status} {r.url}") if r.status >= 400 else None)
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"{page.url}: failed request {r.url}"))
    page.goto(base_url + "index.html")
    assert "Knowledge Distillation Lab" in page.locator("main h1").first.inner_text()
    page.screenshot(path=artifacts / "site_front_page.png", full_page=False)
    for path in NOTEBOOKS:
        page.goto(base_url + f"notebooks/{path.stem}.html")
        heading = page.locator("main h1").first.inner_text()
        assert _title(path).split(" · ")[-1] in heading, (path.name, heading)
        if _has_plot(path):
            assert page.locator("main img[src*='.png']").count() > 0, f"{path.name}: no plot on its page"
        assert page.get_by_text("Download this notebook").count() == 1
        if path.stem.startswith("05_"):
            page.screenshot(path=artifacts / "site_05_distill_student.png", full_page=False)
    assert not errors, "\n".join(errors)


def test_math_is_rendered_on_the_kl_page(page, base_url: str):
    page.goto(base_url + "notebooks/03_kl_divergence.html")
    page.wait_for_selector("mjx-container", timeout=30_000)
    math = page.locator(".math").count()
    assert math > 0 and page.locator(".math mjx-container").count() == math, "every formula typeset by MathJax"
    assert not page.get_by_text(re.compile(r"\$\\?[a-zA-Z]")).count(), "raw TeX left on the page"


def test_explorers_show_their_default_view_and_solutions_are_folded(page, base_url: str):
    page.goto(base_url + "notebooks/02_temperature.html")
    live = page.get_by_text("This is an interactive widget, shown here in its default state")
    assert live.count() >= 1
    assert page.get_by_text(re.compile(r"entropy [\d.]+ bits")).count() >= 1  # the explorer's readout
    page.goto(base_url + "notebooks/05_distill_student.html")
    answers = page.locator("details", has_text="Model answer")
    assert answers.count() >= 1 and not answers.first.evaluate("d => d.open")


def test_no_internal_link_is_broken(site: Path):
    broken = []
    for html in site.rglob("*.html"):
        if html.relative_to(site).parts[0] in ("_static", "mathjax"):
            continue  # theme templates and MathJax's own files, not pages
        for target in re.findall(r'(?:href|src)="([^"]+)"', html.read_text()):
            parsed = urlparse(target)
            if parsed.scheme or target.startswith(("#", "mailto:", "//", "data:", "javascript:")):
                continue
            resolved = Path(unquote(urlparse(urljoin(html.as_uri(), target)).path))
            if not resolved.exists():
                broken.append(f"{html.relative_to(site)} -> {target}")
    assert not broken, "\n".join(sorted(set(broken))[:40])


def test_the_builder_folds_the_solutions_labkit_marks():
    import importlib.util

    from labkit import students

    spec = importlib.util.spec_from_file_location("site_build", REPO / "docs" / "site" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert (build.CODE_BEGIN, build.MARKDOWN_BEGIN, build.MARKDOWN_END) == (
        students.CODE_BEGIN, students.MARKDOWN_BEGIN, students.MARKDOWN_END)
