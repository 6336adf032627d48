"""The gallery store's command line (pipeline/store.py is the store): build one for a checkpoint, add and
remove photos, say what it holds, search it with photos.

    facematch store build  --store stores/lfw --checkpoint checkpoints/demo/best.pt data/sample/people
    facematch store add    --store stores/lfw new_photo.jpg more_photos/
    facematch store remove --store stores/lfw 0a1b2c.jpg
    facematch store forget --store stores/lfw "Ann Smith"          # a learned name
    facematch store info   --store stores/lfw
    facematch store search --store stores/lfw query.jpg
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dataset import DataSettings
from evaluation.calibration import decide, match_words
from pipeline.store import AddReport, GalleryStore
from runtime import EmbeddingSettings
from search.retrieval_settings import RetrievalSettings
from settings import load_config, load_for_inference, run_command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", choices=["build", "add", "remove", "forget", "info", "search"])
    parser.add_argument("items", nargs="*", help="photos or folders (build, add, search), photo names (remove), "
                                                 "learned names (forget), key=value overrides")
    parser.add_argument("--allow-no-face", action="store_true",
                        help="build, add: keep photos where no detector finds a face (a guessed or centre crop)")
    parser.add_argument("--store", required=True, help="the store's folder")
    parser.add_argument("--checkpoint", help="build: the checkpoint whose embeddings the store holds")
    parser.add_argument("-k", type=int, default=10, help="search: results per query photo")
    parser.add_argument("--fpir", type=float, help="search: the false-positive identification rate of its "
                                                   "'no one matches' (default retrieval.fpir)")


def store_command(args: argparse.Namespace) -> int:
    items = args.items
    if args.command == "build":
        if not args.checkpoint:
            args.parser.error("build needs --checkpoint")
        model, cfg, _ = load_for_inference(args.checkpoint, args.config, args.overrides)
        store = GalleryStore.create(args.store, args.checkpoint, model, RetrievalSettings(**cfg["retrieval"]),
                                    DataSettings(**cfg["data"]), EmbeddingSettings(**cfg["embedding"]))
        report = store.add(items, allow_no_face=args.allow_no_face) if items else AddReport()
        print(f"built {args.store}: {report.summary()}")
    elif args.command == "add":
        print(f"{args.store}: {GalleryStore.open(args.store).add(items, allow_no_face=args.allow_no_face).summary()}")
    elif args.command == "remove":
        print(f"{args.store}: removed {GalleryStore.open(args.store).remove(items)}")
    elif args.command == "forget":
        store = GalleryStore.open(args.store)
        for name in items:
            store.forget_name(name)
        print(f"{args.store}: forgot {len(items)} learned name{'s' * (len(items) != 1)}")
    elif args.command == "info":
        print(json.dumps(GalleryStore.open(args.store).info(), indent=1))
    else:
        store = GalleryStore.open(args.store)
        query = store.embed([Path(i) for i in items], "queries")
        dist, names = store.search(query.embeddings, args.k)
        limit = store.threshold(args.fpir or float(load_config(args.config, args.overrides)["retrieval"]["fpir"]))
        for q, d, n in zip(query.names, dist, names):
            print(q + ": " + "  ".join(f"{name} ({x:.3f}{'' if limit is None or decide(x, limit) else ', probably someone else'})"
                                       for name, x in zip(n, d) if name))
            print("  " + match_words(d[0] if len(d) else float("inf"), limit))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, store_command, argv, prog="facematch store",
                       config="the checkpoint's (build)", mixed="items")


if __name__ == "__main__":
    sys.exit(main())
