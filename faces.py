"""Crop the faces of every photo under the given folders into the crop cache and report which step of
the detection chain found each face, several faces, no face and unreadable files (detection/).

    python faces.py data/competition --config config/demo.yaml      # crop a folder, report
    python faces.py photos/ crop.detector=mtcnn crop.align=similarity
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection import crop_paths, list_images
from utils import DataError, FacematchError, get_logger, load_config

log = get_logger()


def main(argv: list[str] | None = None) -> int:
    """Crop every photo under the given folders into the cache and report what was found."""

    parser = argparse.ArgumentParser(
        description="Crop faces of every photo under FOLDER(s) into the crop cache and report which "
                    "step of the detection chain found each face, several faces, no face and "
                    "unreadable files. Later steps reuse the cache.",
        epilog="example: python faces.py data/competition --config config/demo.yaml crop.detector=mtcnn")
    parser.add_argument("folders", nargs="+", help="folders to crop (searched recursively); key=value overrides too")
    parser.add_argument("--config", action="append", default=[], help="config file(s) on top of config/default.yaml")
    args = parser.parse_args(argv)
    overrides = [a for a in args.folders if "=" in a]
    folders = [Path(a) for a in args.folders if "=" not in a]
    try:
        cfg = load_config(args.config, overrides)
        paths = []
        for folder in folders:
            found = list_images(folder, recursive=True)
            if not found:
                raise DataError(f"{folder}: no images")
            paths += found
        _, report = crop_paths(paths, cfg["crop"], cfg["data"]["cache_dir"])
    except (FacematchError, OSError) as exc:
        log.error(f"error: {exc}")
        return 2
    print(f"cropped {', '.join(map(str, folders))} into {cfg['data']['cache_dir']} "
          f"({cfg['crop']['detector']}, align {cfg['crop']['align']}): {report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
