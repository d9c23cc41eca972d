"""The package's shape: no import cycles, every module importable on its own, small modules,
and one owner for the run directory (sidda.runs).

The import graph is read from the source (every ``import`` of a sidda module, at any level,
``TYPE_CHECKING`` blocks included), so a cycle cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "sidda"
#: The longest module we accept (the house rule is about 400 lines).
MAX_LINES = 450


def _modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for path in sorted((src / "sidda").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":  # running it is the CLI, not an import
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _target(name: str, modules: dict[str, Path]) -> str:
    """The module that an import of ``name`` (maybe ``module.attribute``) executes."""
    while name not in modules:
        name = name.rsplit(".", 1)[0]
    return name


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]  # packages below the root


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the sidda modules its import statements execute first."""
    modules = _modules(src)
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = mod if is_pkg else mod.rsplit(".", 1)[0]
                    for _ in range(node.level - 1):
                        base = base.rsplit(".", 1)[0]
                    module = f"{base}.{node.module}" if node.module else base
                else:
                    module = node.module or ""
                names = [f"{module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] != "sidda":
                    continue
                target = _target(name, modules)
                own = set(_ancestors(mod)) | ({mod} if is_pkg else set())
                # importing a.b.c runs the packages a.b first, unless this module is inside them
                deps.update(a for a in _ancestors(target) if a not in own)
                if target != mod:
                    deps.add(target)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_hidden_cycles_and_package_parents(tmp_path):
    pkg = tmp_path / "sidda"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from sidda.b import g\n")  # function-level
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from sidda import a\n")
    (pkg / "sub" / "__init__.py").write_text("from sidda.sub.x import y\n")
    (pkg / "sub" / "x.py").write_text("from sidda.sub.z import w\ny = 1\n")
    (pkg / "sub" / "z.py").write_text("from .. import a\nw = 2\n")
    graph = import_graph(tmp_path)
    assert graph["sidda.a"] == {"sidda.b"} and graph["sidda.b"] == {"sidda.a"}
    assert graph["sidda.sub.x"] == {"sidda.sub.z"}  # its own package is not a dependency
    assert graph["sidda.sub.z"] == {"sidda.a"}  # relative import resolved
    assert find_cycle(graph) == ["sidda.a", "sidda.b", "sidda.a"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_root_package_is_imported_by_nothing_inside_it():
    users = sorted(m for m, deps in import_graph().items() if "sidda" in deps)
    assert users == [], f"these modules import the package root (import a submodule): {users}"


def test_every_module_imports_on_its_own():
    """Each module in a fresh state of sidda (torch stays loaded, which keeps this fast)."""
    code = (
        "import importlib, sys, traceback\n"
        f"mods = {sorted(MODULES)!r}\n"
        "bad = []\n"
        "for m in mods:\n"
        "    for k in [k for k in sys.modules if k == 'sidda' or k.startswith('sidda.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception:\n"
        "        bad.append(m + ': ' + traceback.format_exc().splitlines()[-1])\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", "import torch\n" + code], capture_output=True,
                         text=True, timeout=600, env=_env())
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]


def _env() -> dict:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_modules_stay_small(mod):
    n = len(MODULES[mod].read_text().splitlines())
    assert n <= MAX_LINES, f"{mod} has {n} lines; split it by noun (house rule: about 400)"


#: A run's file names as string literals; only sidda.runs may spell them.
RUN_FILE_LITERAL = re.compile(r'"(run|metrics|summary|environment|data_manifest)\.json"'
                              r'|"(config\.yaml|argv\.txt|history(_steps)?\.csv)"')


def test_only_the_runs_package_names_the_files_of_a_run():
    hits = [f"{path.relative_to(SRC)}:{i}: {line.strip()}"
            for mod, path in MODULES.items() if not mod.startswith("sidda.runs")
            for i, line in enumerate(path.read_text().splitlines(), 1)
            if RUN_FILE_LITERAL.search(line)]
    assert hits == [], "use sidda.runs.RunDir instead of a file name:\n" + "\n".join(hits)
    assert RUN_FILE_LITERAL.search('path / "metrics.json"')  # the pattern finds one


def test_one_place_says_what_is_not_a_run_directory():
    where = [mod for mod, path in MODULES.items()
             for _ in range(path.read_text().count("not a run directory"))]
    assert where == ["sidda.runs.rundir"]


def test_evaluate_computes_and_never_opens_a_run_directory():
    graph = import_graph()
    up = sorted(f"{mod} -> {dep}" for mod, deps in graph.items()
                if mod.startswith("sidda.evaluate") for dep in deps if dep.startswith("sidda.runs"))
    assert up == []
    assert all(not (PKG / p).exists() for p in ("experiments/rundir.py", "evaluate/publish.py",
                                                "distributed.py", "recovery.py"))
