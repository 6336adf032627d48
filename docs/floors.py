"""The floors of facematch's code: every module's imports (lazy ones inside functions too), which floor each
package stands on, and the diagram of both that the README shows (figures/floors.png). tests/test_layout.py
checks the same floors with the same graph.

    .venv/bin/python docs/floors.py            # redraws figures/floors.png and prints the package graph

Only the standard library and matplotlib: it reads the code (ast), it imports none of it.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("tests", "other_models", "docs", "bench")  # scripts and tests: not installed, on no floor
# The floors, from the bottom: a module may import its own package's modules and what lies on a floor below
# its own, never beside or above. A dotted name (cli.gallery) has the floor of its nearest listed name.
FLOORS = [
    ("utils",),                                              # small shared helpers
    ("search", "evaluation", "detection", "backbones", "serving"),  # the pure parts: vectors, scores, faces,
                                                             # networks, what every server needs
    ("runtime", "occlusion"),                                # the network outside PyTorch: preprocessing, ONNX;
                                                             # covers drawn on faces
    ("dataset",),                                            # photos to tensors, identity splits
    ("torchnet",),                                           # the network in PyTorch: its parts, checkpoints, embed loop
    ("network",),                                            # the names callers import of the network
    ("pipeline",),                                           # photos to embeddings, the store, the protocol
    ("training", "competition", "webapp", "deploy"),         # what the pipeline serves
    ("settings",),                                           # the configuration, read at the top
    ("train", "request_send"),                               # the design's scripts
    ("cli",),                                                # the commands and the facematch entry point
]
FLOOR_NAMES = ["helpers", "pure parts", "outside PyTorch, covers", "photos to tensors", "the network in PyTorch",
               "the network's names", "the pipeline", "applications",
               "configuration", "the design's scripts", "commands"]


def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the installed code (top-level modules and packages)."""
    found = {p.stem: p for p in ROOT.glob("*.py")}
    for init in ROOT.glob("*/__init__.py"):
        package = init.parent
        if package.name in CODE_DIRS:
            continue
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


def module_graph() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports."""
    modules = project_modules()
    return {name: imports_of(path, name, set(modules)) for name, path in modules.items()}


def floor_of(name: str) -> int:
    """The floor of a dotted module name: its own entry in FLOORS, else its nearest enclosing package's."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        for level, names in enumerate(FLOORS):
            if ".".join(parts[:n]) in names:
                return level
    raise ValueError(f"{name} is on no floor: add it to FLOORS in docs/floors.py (and redraw figures/floors.png)")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module outside the importer's package that is not on a lower floor."""
    return [f"{name} (floor {floor_of(name)}) imports {dep} (floor {floor_of(dep)})"
            for name, deps in sorted(graph.items()) for dep in sorted(deps)
            if dep.split(".")[0] != name.split(".")[0] and floor_of(dep) >= floor_of(name)]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between top-level names (packages and modules), a package's own imports left out."""
    out: dict[str, set[str]] = {}
    for name, deps in graph.items():
        top = name.split(".")[0]
        out.setdefault(top, set()).update(d.split(".")[0] for d in deps if d.split(".")[0] != top)
    return out


def draw(graph: dict[str, set[str]], path: Path) -> None:
    """The floors as bands, bottom up, each package a box, each import between packages a line going down."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    where = {}
    for level, names in enumerate(FLOORS):
        for i, name in enumerate(names):
            where[name] = ((i + 1) / (len(names) + 1), level)
    fig, ax = plt.subplots(figsize=(9, 7.5))
    for name, deps in sorted(graph.items()):  # sorted: the same figure from the same graph, byte for byte
        for dep in sorted(deps):
            (x0, y0), (x1, y1) = where[name], where[dep]
            ax.annotate("", xy=(x1, y1 + 0.22), xytext=(x0, y0 - 0.22),
                        arrowprops={"arrowstyle": "->", "color": "#8899aa", "lw": 0.6, "alpha": 0.6})
    for level, label in enumerate(FLOOR_NAMES):
        ax.axhspan(level - 0.45, level + 0.45, color="#f3f5f8" if level % 2 else "#e8edf3", zorder=0)
        ax.text(-0.02, level, label, ha="right", va="center", fontsize=9, color="#445")
    for name, (x, y) in where.items():
        ax.text(x, y, name + ("/" if (ROOT / name).is_dir() else ".py"), ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round,pad=0.35", "fc": "white", "ec": "#335"}, zorder=3)
    ax.set_xlim(-0.32, 1.0)
    ax.set_ylim(-0.6, len(FLOORS) - 0.4)
    ax.axis("off")
    ax.set_title("facematch's floors: every import goes down (docs/floors.py, checked by tests/test_layout.py)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    graph = module_graph()
    bad = upward_imports(graph)
    if bad:
        print("imports that do not go down a floor:\n" + "\n".join(bad))
        return 1
    packages = package_graph(graph)
    for name in sorted(packages, key=lambda n: (floor_of(n), n)):
        print(f"{floor_of(name)} {name:14s} -> {', '.join(sorted(packages[name], key=lambda n: (floor_of(n), n))) or '–'}")
    draw(packages, ROOT / "figures" / "floors.png")
    print(f"drew {ROOT / 'figures' / 'floors.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
