"""Build the course website: a static HTML site (Jupyter Book 1, Sphinx) from the committed notebooks.

    python docs/site/build.py [--out build/site]

The notebooks are not re-executed: their committed outputs are real full-mode runs. Each one is copied into a
staging folder and prepared for a page that no kernel runs:

* progress bars (tqdm widgets) are dropped; an interactive explorer is replaced by the figure and readout it showed
  in its default state (both are kept in the notebook's widget state) and a sentence on how to run it live;
* exercise solutions are folded behind a toggle (code: the input; written answers: a "Model answer" dropdown);
* each page starts with a download link to its notebook.

The landing page is the README's overview and course table; the instructor guide is a page too. Links to
repository files that are not pages become code names. MathJax is served from the site itself (the npm package
named in docs/site/package.json), so a page needs nothing from the internet. Why not Jupyter Book 2: its MyST
engine downloads the site template at build time, which an offline build cannot do.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"
# labkit.students' markers, spelled out: the site builds without labkit (and so without torch) installed
CODE_BEGIN, MARKDOWN_BEGIN, MARKDOWN_END = "# BEGIN SOLUTION", "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
LIVE = ("*This is an interactive widget, shown here in its default state. To use it, run the notebook: "
        "`make lab` opens the course in JupyterLab.*")
LINK = re.compile(r"\[([^\]]+)\]\(([^)#\s]+)(#[^)\s]*)?\)")


def widget_parts(state: dict, model_id: str) -> tuple[list[dict], list[str]]:
    """The image outputs and HTML readouts inside a widget (its Output and HTML children, recursively)."""
    model = state.get(model_id)
    if model is None:
        return [], []
    images, html = [], []
    if model["model_name"] == "OutputModel":
        images += [o for o in model["state"].get("outputs", []) if "image/png" in o.get("data", {})]
    if model["model_name"] == "HTMLModel":
        html.append(model["state"].get("value", ""))
    for child in model["state"].get("children", []):
        more_images, more_html = widget_parts(state, child.removeprefix("IPY_MODEL_"))
        images += more_images
        html += more_html
    return images, html


def static_outputs(outputs: list, state: dict) -> list:
    """``outputs`` with widgets replaced: a progress bar by nothing, an explorer by its default-state view."""
    kept = []
    for out in outputs:
        data = out.get("data", {})
        if WIDGET not in data:
            kept.append(out)
            continue
        images, html = widget_parts(state, data[WIDGET]["model_id"])
        if not images and not html:
            continue  # a progress bar: its text is the bar's first frame, which says nothing on a page
        readout = "".join(f"<p>{h}</p>" for h in html)
        kept.extend(nbformat.v4.new_output("display_data", data=dict(image.get("data", {}))) for image in images)
        kept.append(nbformat.v4.new_output("display_data", data={"text/html": readout + f"<p>{LIVE}</p>",
                                                                 "text/plain": LIVE}))
    return kept


def prepare_notebook(source: Path, target: Path, download: str) -> None:
    """A notebook made ready for a static page (see the module docstring)."""
    nb = nbformat.read(source, as_version=4)
    state = nb.metadata.pop("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = static_outputs(cell.outputs, state)
            if CODE_BEGIN in cell.source:
                cell.metadata.setdefault("tags", []).append("hide-input")
        elif MARKDOWN_BEGIN in cell.source:
            body = cell.source.replace(MARKDOWN_BEGIN, "").replace(MARKDOWN_END, "").strip()
            cell.source = f":::{{dropdown}} Model answer\n{body}\n:::"
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(
        f"{{download}}`Download this notebook <{download}>` and run it with `make lab` (see the course's README)."))
    nbformat.write(nb, target)


def course_overview(readme: str, pages: set[str]) -> str:
    """The README's introduction and course table, with links to files that are not pages made code names."""
    intro = readme.split("\n## ", 1)[0]
    course = "## The course" + readme.split("\n## The course", 1)[1].split("\n## ", 1)[0]

    def link(match: re.Match) -> str:
        text, target = match[1], match[2]
        if target.startswith(("http://", "https://")) or target in pages:
            return match[0]
        return f"{text} (`{target}`)"

    text = LINK.sub(link, intro + "\n" + course)
    names = re.compile(r"^\| (\d\d_\w+) \|", re.MULTILINE)
    return names.sub(lambda m: f"| [{m[1]}](notebooks/{m[1]}.ipynb) |", text)


def stage(folder: Path) -> None:
    """Copy the pages and their configuration into ``folder``."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "notebooks").mkdir(parents=True)
    (folder / "docs").mkdir()
    (folder / "_downloads_src").mkdir()
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(HERE / name, folder / name)
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in notebooks:
        shutil.copy(path, folder / "_downloads_src" / path.name)
        prepare_notebook(path, folder / "notebooks" / path.name, f"../_downloads_src/{path.name}")
    shutil.copy(REPO / "docs" / "instructors.md", folder / "docs" / "instructors.md")
    pages = {f"notebooks/{p.name}" for p in notebooks} | {"docs/instructors.md"}
    (folder / "index.md").write_text(course_overview((REPO / "README.md").read_text(), pages))
    toc = (folder / "_toc.yml").read_text()
    missing = [p for p in pages if p.rsplit(".", 1)[0] not in toc]
    if missing:
        raise SystemExit(f"docs/site/_toc.yml does not list {sorted(missing)}: add them in course order")


def mathjax(folder: Path) -> None:
    """MathJax from the npm package pinned in docs/site/package.json, copied into the site as it is."""
    modules = REPO / "build" / "site-npm"
    if not (modules / "node_modules" / "mathjax" / "es5" / "tex-chtml.js").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm not found: the site serves MathJax itself (Debian: apt-get install npm)")
        modules.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(HERE / name, modules / name)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(modules)], check=True)
    # not under _static: Jupyter Book would load every script found there on every page
    shutil.copytree(modules / "node_modules" / "mathjax" / "es5", folder / "_extra" / "mathjax")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "site", help="output folder (default build/site)")
    args = parser.parse_args()
    source = args.out / "src"
    stage(source)
    mathjax(source)
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(source), "--path-output", str(args.out),
                    "--keep-going", "--warningiserror"], check=True)
    print(f"site: {args.out / '_build' / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
