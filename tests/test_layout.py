"""The shape of the code base: every module installed by pyproject.toml, floors whose imports only go down
(no package imports one on a floor above it, no cycle; lazy imports inside functions included), settings
passed as arguments (no library function takes a config dict), and no sys.path edits."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from conftest import ROOT


def _floors():
    """docs/floors.py, which draws the README's diagram from the same floors and graph, loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("floors", ROOT / "docs" / "floors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


floors = _floors()
FLOORS, CODE_DIRS, floor_of, upward_imports = floors.FLOORS, floors.CODE_DIRS, floors.floor_of, floors.upward_imports
project_modules, imports_of = floors.project_modules, floors.imports_of
LIBRARY = {name for floor in FLOORS[:FLOORS.index(("settings",))] for name in floor}  # below the configuration: takes settings, not dicts


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


def test_floors_run_one_way():
    modules = project_modules()
    graph = {name: imports_of(path, name, set(modules)) for name, path in modules.items()}
    assert not upward_imports(graph), "imports that do not go down a floor:\n" + "\n".join(upward_imports(graph))
    assert {d.split(".")[0] for d in graph["search.retrieval"]} <= {"search", "utils"}, "search/ is vector code only"
    # the check can fail: search importing the network (as search/retrieval.py once did) is caught
    assert upward_imports({"search.retrieval": {"network"}}) == ["search.retrieval (floor 1) imports network (floor 5)"]
    assert upward_imports({"evaluation.protocol": {"competition"}, "competition.rules": {"evaluation.metrics"}}) == [
        "evaluation.protocol (floor 1) imports competition (floor 7)"]
    assert (ROOT / "figures" / "floors.png").exists(), "the README's diagram: .venv/bin/python docs/floors.py draws it"


CONFIG_NAMES = re.compile(r"(^|_)cfg$|^config$")


def config_parameters(path: Path) -> list[str]:
    """Functions of a file with a parameter that holds a config dictionary (named cfg, *_cfg or config)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            found += [f"{node.name}({a.arg})" for a in args if CONFIG_NAMES.search(a.arg)]
    return found


def test_no_library_function_takes_a_config_dict():
    found = {name: bad for name, path in project_modules().items()
             if name.split(".")[0] in LIBRARY and (bad := config_parameters(path))}
    assert not found, f"library functions take a config dict (turn its section into typed settings): {found}"
    assert config_parameters(ROOT / "train.py"), "the check finds such parameters where they are (train.py's)"


def test_no_sys_path_edits():
    files = [p for p in [*ROOT.glob("*.py"), *ROOT.glob("*/*.py")] if p != Path(__file__).resolve()]
    edits = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if "sys.path.insert" in line or "sys.path.append" in line]
    assert not edits, f"sys.path edited in {edits}: pyproject.toml (pip install -e .) makes the code importable"


def test_no_long_function_outside_bench_and_tests():
    """About 60 lines at most, unless a comment on the def line says why (`# long: ...`)."""
    long = []
    for name, path in project_modules().items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                if "# long:" not in lines[node.lineno - 1]:
                    long.append(f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, f"functions over 60 lines: {long}"


def test_no_file_name_is_used_twice_and_bench_is_scripts():
    """One name, one file (a package's __init__ and __main__ aside), so a name says where a thing lives."""
    files = [p for d in [ROOT, *[p for p in ROOT.iterdir() if p.is_dir() and p.name not in (".venv", ".git", "data")]]
             for p in (d.glob("*.py") if d == ROOT else d.rglob("*.py"))
             if p.name not in ("__init__.py", "__main__.py") and ".venv" not in p.parts]
    seen: dict[str, list[str]] = {}
    for p in files:
        seen.setdefault(p.name, []).append(str(p.relative_to(ROOT)))
    assert len(files) > 50, "the walk found the project's files"
    assert not {n: ps for n, ps in seen.items() if len(ps) > 1}, "file names used twice"
    assert not (ROOT / "bench" / "__init__.py").exists(), "bench/ holds scripts (python bench/NAME.py), not a package"
