"""The shape of the code base: every module installed by pyproject.toml, imports that run one way
(no cycle, lazy imports inside functions included) and no sys.path edits."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from conftest import ROOT

CODE_DIRS = ("tests", "other_models")  # tests and the baselines' scripts: not installed


def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the installed code (top-level modules and packages)."""
    found = {p.stem: p for p in ROOT.glob("*.py")}
    for init in ROOT.glob("*/__init__.py"):
        package = init.parent
        found[package.name] = init
        found.update({f"{package.name}.{p.stem}": p for p in package.glob("*.py") if p.name != "__init__.py"})
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in it (module level or inside functions)."""
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        # Importing a.b runs a's __init__ first: a package counts as imported by its modules' importers.
        out |= {n for n in names if n in known} | {n.rsplit(".", 1)[0] for n in names if "." in n and n in known}
    return out - {name}


def test_pyproject_installs_every_module_and_package():
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules = {p.stem for p in ROOT.glob("*.py")}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - set(CODE_DIRS)
    assert set(settings["py-modules"]) == modules, "pyproject.toml's py-modules must list every top-level module"
    assert set(settings["packages"]) == packages, "pyproject.toml's packages must list every package"


def test_imports_run_one_way():
    modules = project_modules()
    graph = {name: imports_of(path, name, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [name, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert "dataset" in graph and graph["train"], "the graph was built from the real modules"


def test_no_sys_path_edits():
    files = [p for p in [*ROOT.glob("*.py"), *ROOT.glob("*/*.py")] if p != Path(__file__).resolve()]
    edits = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if "sys.path.insert" in line or "sys.path.append" in line]
    assert not edits, f"sys.path edited in {edits}: pyproject.toml (pip install -e .) makes the code importable"


def test_no_long_function_outside_bench_and_tests():
    """About 60 lines at most, unless a comment on the def line says why (`# long: ...`)."""
    long = []
    for name, path in project_modules().items():
        if name.split(".")[0] == "bench":  # measurement scripts: a report is one long function
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                if "# long:" not in lines[node.lineno - 1]:
                    long.append(f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, f"functions over 60 lines: {long}"
