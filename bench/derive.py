"""A table row's checkpoint with some crop or embedding settings changed, written as a row of its own, so that the
commands that take a checkpoint (facematch evaluate, bench/covered_queries.py, bench/lfw_pairs.py) score what
bench/choose_best.py scores as ROW:key=value (the network untouched: its weights, meta and calibration kept).

    .venv/bin/python bench/derive.py mfn192_ft_covers mfn192_ft_fast yunet_side=192 tta=none
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "table"


def main(argv: list[str] | None = None) -> int:
    from choose_best import changed
    from network import read_checkpoint, save_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("row", help="checkpoints/table/<row>/best.pt")
    parser.add_argument("new", help="checkpoints/table/<new>/best.pt is written")
    parser.add_argument("changes", nargs="+", help="key=value: a crop setting, or an embedding one (tta=none)")
    args = parser.parse_args(argv)
    ckpt = read_checkpoint(CKPT / args.row / "best.pt")
    if "members" in ckpt:
        raise SystemExit(f"{args.row}: a fusion; derive its members instead")
    embedding = ckpt["config"]["embedding" if "embedding" in ckpt["config"] else "retrieval"]  # older: retrieval
    changed(ckpt["meta"]["crop"], embedding, args.changes, args.row)
    ckpt["config"]["crop"].update(ckpt["meta"]["crop"])  # the config says what the meta crops by
    ckpt["derived"] = {"from": args.row, "changes": args.changes}
    (CKPT / args.new).mkdir(parents=True, exist_ok=True)
    save_checkpoint(CKPT / args.new / "best.pt", ckpt)
    print(f"{CKPT / args.new / 'best.pt'}: {args.row} with {', '.join(args.changes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
