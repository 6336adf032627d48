"""Crop the faces of every photo under the given folders into the crop cache and report which step of
the detection chain found each face, several faces, no face and unreadable files (detection/).

    facematch faces data/competition --config config/demo.yaml      # crop a folder, report
    facematch faces photos/ crop.detector=mtcnn crop.align=similarity
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection import crop_paths, describe_chain, list_images
from utils import DataError
from settings import crop_settings_of, run_command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="+", help="folders to crop (searched recursively); key=value overrides too")


def crop_folders(args: argparse.Namespace) -> int:
    """Crop every photo under the given folders into the cache and report what was found."""
    cfg, folders = args.cfg, [Path(a) for a in args.folders]
    if not folders:
        args.parser.error("give at least one folder")
    paths = []
    for folder in folders:
        found = list_images(folder, recursive=True)
        if not found:
            raise DataError(f"{folder}: no images")
        paths += found
    for crop in crop_settings_of(cfg):  # a fusion's members each crop their own way
        _, report = crop_paths(paths, crop, cfg["data"]["cache_dir"])
        print(f"cropped {', '.join(map(str, folders))} into {cfg['data']['cache_dir']} "
              f"({describe_chain(crop)}; align {crop.align}, {crop.size} px): {report.summary()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, crop_folders, argv, prog="facematch faces", mixed="folders")


if __name__ == "__main__":
    sys.exit(main())
