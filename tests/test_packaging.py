"""Every module that labkit and the notebooks import at their top level is installed by `pip install '.[lab]'`."""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def top_level_imports(source: str) -> set[str]:
    """First names of the modules imported by statements at the top level of ``source`` (not inside functions,
    where labkit imports its optional packages)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def notebook_sources() -> list[str]:
    sources = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                # IPython magics (%autoreload, !pip) are not Python
                code = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.lstrip()[:1] in "%!")
                sources.append(code)
    return sources


def declared(extras: tuple[str, ...]) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-") for r in requirements}


def test_runtime_imports_are_runtime_dependencies():
    sources = [p.read_text() for p in (ROOT / "labkit").glob("*.py")] + notebook_sources()
    modules = set().union(*map(top_level_imports, sources)) - set(sys.stdlib_module_names) - {"labkit", "__future__"}
    providers = packages_distributions()
    needed = {m: {d.lower().replace("_", "-") for d in providers.get(m, [m])} for m in modules}
    allowed = declared(("lab",))
    missing = {m: sorted(d) for m, d in needed.items() if not d & allowed}
    assert not missing, (f"imported at module level by labkit or a notebook but not installed by "
                         f"pip install '.[lab]': {missing}; add them to [project] dependencies in pyproject.toml")


def test_the_import_reader_sees_what_it_should():
    source = "import numpy as np\nfrom scipy import stats\nfrom . import x\ndef f():\n    import wandb\n"
    assert top_level_imports(source) == {"numpy", "scipy"}


def labkit_import_graph() -> dict[str, set[str]]:
    """labkit module -> the labkit modules it imports anywhere in its body (lazy imports included)."""
    modules = {p.stem for p in (ROOT / "labkit").glob("*.py")}
    graph = {}
    for name in modules:
        deps = set()
        for node in ast.walk(ast.parse((ROOT / "labkit" / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == "labkit":
                parts = node.module.split(".")
                deps |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("labkit.")}
        graph[name] = deps - {name}
    return graph


def test_labkit_has_no_import_circle():
    graph, done, cycles = labkit_import_graph(), set(), []

    def visit(name: str, path: list[str]) -> None:
        for dep in sorted(graph.get(name, ())):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(name)

    for name in sorted(graph):
        visit(name, [name])
    assert not cycles, f"labkit modules import each other in a circle: {cycles[0]}"
    assert "data" not in graph["download"] and "download" in graph["data"]  # the circle that once was


def test_project_code_names_no_tracker_issue():
    named = [f"{p.relative_to(ROOT)}:{i}" for folder in ("labkit", "benchmarks") for p in (ROOT / folder).glob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\b[Ii]ssue'?s? ?#?\d", line)]
    assert not named, f"code should say what it does, not which tracker issue asked for it: {named}"
