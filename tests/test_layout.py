"""The shape of the code base: every module installed by pyproject.toml, floors whose imports only go down
(no package imports one on a floor above it, no cycle; lazy imports inside functions included), settings
passed as arguments (no library function takes a config dict), and no sys.path edits."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from conftest import ROOT

CODE_DIRS = ("tests", "other_models")  # tests and the baselines' scripts: not installed
# The floors, from the bottom: a module may import its own package's modules and what lies on a floor below
# its own, never beside or above. A dotted name (cli.gallery) has the floor of its nearest listed name.
FLOORS = [
    ("utils",),                                              # small shared helpers
    ("search", "evaluation", "detection", "backbones"),      # the pure parts: vectors, scores, faces, networks
    ("dataset",),                                            # photos to tensors, identity splits
    ("network",),                                            # the embedding network and its checkpoints
    ("pipeline",),                                           # photos to embeddings, the store, the protocol
    ("training", "competition", "webapp"),                   # what the pipeline serves
    ("settings",),                                           # the configuration, read at the top
    ("train", "request_send"),                               # the design's scripts
    ("cli",),                                                # the commands and the facematch entry point
]
LIBRARY = {name for floor in FLOORS[:6] for name in floor}  # below the configuration: takes settings, not dicts


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


def floor_of(name: str) -> int:
    """The floor of a dotted module name: its own entry in FLOORS, else its nearest enclosing package's."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        for level, names in enumerate(FLOORS):
            if ".".join(parts[:n]) in names:
                return level
    raise AssertionError(f"{name} is on no floor: add it to FLOORS in tests/test_layout.py (and the README's diagram)")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module outside the importer's package that is not on a lower floor."""
    return [f"{name} (floor {floor_of(name)}) imports {dep} (floor {floor_of(dep)})"
            for name, deps in sorted(graph.items()) for dep in sorted(deps)
            if dep.split(".")[0] != name.split(".")[0] and floor_of(dep) >= floor_of(name)]


def test_floors_run_one_way():
    modules = project_modules()
    graph = {name: imports_of(path, name, set(modules)) for name, path in modules.items()}
    assert not upward_imports(graph), "imports that do not go down a floor:\n" + "\n".join(upward_imports(graph))
    assert {d.split(".")[0] for d in graph["search.retrieval"]} <= {"search", "utils"}, "search/ is vector code only"
    # the check can fail: search importing the network (as search/retrieval.py once did) is caught
    assert upward_imports({"search.retrieval": {"network"}}) == ["search.retrieval (floor 1) imports network (floor 3)"]
    assert upward_imports({"evaluation.protocol": {"competition"}, "competition.rules": {"evaluation.metrics"}}) == [
        "evaluation.protocol (floor 1) imports competition (floor 5)"]


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
