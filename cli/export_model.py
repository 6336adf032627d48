"""Export a checkpoint for ONNX Runtime: a folder that crops and embeds as the checkpoint does, without PyTorch running
the network (docs/deploy.md). Every network is checked against PyTorch on real chips before anything is written.

    facematch export --checkpoint checkpoints/best/best.pt --out exports/best
    facematch export --checkpoint checkpoints/best/best.pt --out exports/best_int8 --precision int8 \\
                     --calibrate data/competition/train          # int8: calibrated on training people's photos
    facematch submit --checkpoint exports/best --test data/competition/test    # the export ranks as the checkpoint

Prints each network's agreement with PyTorch (the largest difference in any number, the least cosine).
"""
from __future__ import annotations

import argparse
import sys

from settings import run_command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py (a fusion too)")
    parser.add_argument("--out", required=True, help="the folder to write (replaced if it holds an export)")
    parser.add_argument("--precision", default=None, choices=["fp32", "int8", "fp16"],
                        help="the exported numbers (default: model.precision, fp32)")
    parser.add_argument("--calibrate", default=None,
                        help="int8: photos (identity folders) to calibrate on (default: data.train_dir)")
    parser.add_argument("--check", default="data/sample",
                        help="photos whose chips the export is checked on against PyTorch (default: data/sample)")
    parser.add_argument("--min-cosine", type=float, default=None,
                        help="the least cosine to PyTorch's embedding accepted (default: by precision, "
                             "deploy/export.py MIN_COSINE)")


def export(args: argparse.Namespace) -> int:
    from deploy import export_checkpoint

    cfg = args.cfg
    precision = args.precision or cfg["model"]["precision"]
    manifest = export_checkpoint(args.checkpoint, args.out, precision, check=args.check,
                                 calibrate=args.calibrate or cfg["data"]["train_dir"], min_cosine=args.min_cosine)
    for net in manifest["networks"]:
        check = net["check"]
        print(f"{args.out}/{net['file']}: {net['info']['arch']} ({precision}), against PyTorch on {check['chips']} "
              f"chips: largest difference {check['max_abs']:.2e}, least cosine {check['min_cosine']:.6f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, export, argv, prog="facematch export")


if __name__ == "__main__":
    sys.exit(main())
