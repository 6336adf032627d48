"""Build a competition from labelled photos, deterministically from the seed.

    facematch split --people data/sample/people --distractors data/sample/distractors \
                    --out data/competition split.test_fraction=0.5 seed=0

Writes, under --out:
  train/<person>/<photo>      people for training (none of them is in the test set)
  test/query/<40 hex>.jpg     query photos of the test people, under opaque names
  test/gallery/<40 hex>.jpg   the test people's other photos, plus every distractor
  ground_truth.json           for the server: query → correct gallery names, and the gallery list
  key.json                    for the organiser: opaque name → original file
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from competition.builder import make_split, write_split
from dataset import SplitSettings
from settings import run_command



def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--people", required=True, help="identity folders: <dir>/<person>/<photo>")
    parser.add_argument("--distractors", help="photos of people who match nobody (any folder layout)")
    parser.add_argument("--out", required=True, help="competition folder to write")
    parser.add_argument("--name", help="competition name (default: the --out folder's name)")
    parser.add_argument("--force", action="store_true", help="rebuild --out when it already exists")


def split_folders(args: argparse.Namespace) -> int:
    cfg, s = args.cfg, SplitSettings(**args.cfg["split"])
    split = make_split(args.people, args.distractors, cfg["seed"], s.test_fraction, s.queries_per_person)
    truth = write_split(split, args.out, args.name or Path(args.out).name, cfg["seed"], args.force)
    n_matches = sum(len(v) for v in split["queries"].values())
    print(f"split into {args.out}: {len(split['train'])} training people "
          f"({sum(map(len, split['train'].values()))} photos); test: {len(split['query'])} queries, "
          f"{len(split['gallery'])} gallery photos ({n_matches} correct matches, "
          f"{len(split['gallery']) - len({g for v in split['queries'].values() for g in v})} distractors); "
          f"ground truth {truth}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, split_folders, argv, prog="facematch split")


if __name__ == "__main__":
    sys.exit(main())
