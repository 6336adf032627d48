"""The commands' one way in: their arguments, --config files and overrides, and one error line instead of a
traceback."""
from __future__ import annotations

import argparse
from typing import Callable

from utils import TRAIN_INSTALL, FacematchError, get_logger, training_package
from settings.config import load_config

COMMAND_ERRORS: tuple[type[BaseException], ...] = (FacematchError, OSError)  # one line and exit status 2 each


def command_parser(doc: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A command's parser, its module docstring as the description; the command adds its own arguments next."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_command(parser: argparse.ArgumentParser, argv: list[str] | None, *, config: str = "config/default.yaml",
                  mixed: str | None = None) -> argparse.Namespace:
    """--config files (on top of `config`) and key=value overrides added after the command's own arguments, then
    argv parsed: args.config, args.overrides and args.parser. `mixed` names a positional list that holds the
    overrides too (`facematch faces`'s folders), which are moved to args.overrides."""
    parser.add_argument("--config", action="append", default=[], help=f"config file(s) on top of {config}")
    if mixed is None:
        parser.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. seed=1)")
    args = parser.parse_intermixed_args(argv) if mixed else parser.parse_args(argv)
    if mixed:
        items = getattr(args, mixed)
        args.overrides = [a for a in items if "=" in a]
        setattr(args, mixed, [a for a in items if "=" not in a])
    args.parser = parser
    return args


def command_failed(exc: BaseException) -> int:
    """A command's error as one logged line, never a traceback: exit status 2."""
    get_logger().error(f"error: {exc}")
    return 2


def run_command(doc: str, arguments: Callable[[argparse.ArgumentParser], None],
                body: Callable[[argparse.Namespace], int | None], argv: list[str] | None = None, *,
                prog: str | None = None, config: str = "config/default.yaml", mixed: str | None = None,
                errors: tuple[type[BaseException], ...] = ()) -> int:
    """The one way in for every command: its own arguments (`arguments` adds them), then --config files
    (on top of `config`) and key=value overrides (parse_command), and the error tail: a FacematchError, an OSError
    or one of `errors` is one logged line and exit status 2, never a traceback.

    `body(args)` does the work with args.config and args.overrides; with config="config/default.yaml"
    args.cfg is load_config(args.config, args.overrides) (other commands start from a checkpoint's
    config and load it themselves)."""
    parser = command_parser(doc, prog)
    arguments(parser)
    args = parse_command(parser, argv, config=config, mixed=mixed)
    try:
        if config == "config/default.yaml":
            args.cfg = load_config(args.config, args.overrides)
        return int(body(args) or 0)
    except (FacematchError, OSError, *errors) as exc:
        get_logger().error(f"error: {exc}")
        return 2
    except ModuleNotFoundError as exc:  # a step of the full install's on the inference one (pip install -e .)
        if (package := training_package(exc)) is None or prog is None:
            raise  # the design's scripts (no prog): `facematch submit`, `facematch train` say it with their names
        get_logger().error(f"error: `{parser.prog}` needs {package}, which the inference install leaves out: install "
                           f"the full set with `{TRAIN_INSTALL}` (or `make venv`)")
        return 2
