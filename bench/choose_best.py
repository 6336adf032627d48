"""config/best.yaml chosen on validation people over clean and every kind of cover (issue 27): each candidate
checkpoint alone and every pair fused (training/fusion.py: weights in steps of 0.1), scored on data/dev's validation
people (what train.py holds out of data/dev/train: val_fraction 0.1, seed 0), every photo against the clean others,
clean and under each cover kind drawn from *training's* covers on the photo before its face is looked for. The
choice is the highest mean top-1 over clean and the eight kinds; the test people are never looked at here
(bench/covered_queries.py scores the choice on them, with the evaluation's covers).

    .venv/bin/python bench/choose_best.py dlib_ft_best faceres_as_is [ROW ...]   # checkpoints/table/<row>/best.pt
    .venv/bin/python bench/choose_best.py dlib_ft_best dlib_ft_best:fill_dark_patches=false   # a crop setting changed

Each row's embeddings are kept in outputs/choose/<row>/<condition>.npz (reused while newer than the checkpoint). Writes the
section "choice" of bench/RESULTS.md.

With --time N, every candidate alone and every pair is also timed end to end on N validation photos (read, find,
crop, embed; no cache; ONNX Runtime, one thread; the median of --runs), beside face_recognition on the same photos in
the same run, and --speed R chooses the most accurate line at least R times face_recognition's photos/s (issue 37:
a member must earn its time).
"""
from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, machine, write_section  # noqa: E402

DEV = ROOT / "data" / "dev"
CKPT = ROOT / "checkpoints" / "table"
OUT = ROOT / "outputs" / "choose"


def val_people() -> tuple[list[Path], list[str]]:
    """data/dev's validation people as train.py holds them out (val_fraction 0.1, seed 0): photos and owners."""
    from dataset import DataSettings
    from training.data import split_people

    _, val = split_people(DataSettings(train_dir=str(DEV / "train"), val_fraction=0.1, min_photos=2), 0)
    return [p for photos in val.values() for p in photos], [n for n, photos in val.items() for _ in photos]


def embeddings_of(row: str, paths: list[Path], kinds: list[str],
                  covers: str = "training") -> tuple[list[str], dict[str, np.ndarray]]:
    """The row's validation embeddings, clean and per kind (`covers`: training's, or the evaluation's for a first
    look): (photo paths kept, {condition: array}), each condition kept in outputs/choose/<row>/<condition>.npz
    (outputs/choose_evaluation/ for the evaluation's covers) as soon as it is computed."""
    from dataset import DataSettings
    from network import model_from_checkpoint
    from runtime import EmbeddingSettings
    from occlusion.covers import EVALUATION, TRAINING
    from training.fusion import embeddings_by_condition

    name = row.partition(":")[0]  # ROW:key=value,...: the row's checkpoint with its crop settings changed (changed())
    out_dir = OUT if covers == "training" else OUT.with_name("choose_evaluation")
    safe = row.replace(":", "__").replace("=", "-").replace(",", "_").replace("/", "_").replace('"', "")
    folder, ckpt = out_dir / safe, CKPT / name / "best.pt"
    model = cfg = None
    found: dict[str, tuple[list[str], np.ndarray]] = {}
    whole = folder.with_suffix(".npz")  # every condition of a row in one file, as the first version kept them
    if whole.exists() and whole.stat().st_mtime > ckpt.stat().st_mtime:
        kept = np.load(whole)
        found = {c: (list(kept["paths"]), kept[c]) for c in ["clean", *kinds] if c in kept}
    for condition in ["clean", *kinds]:
        out = folder / f"{condition}.npz"
        if condition in found:
            continue
        if out.exists() and out.stat().st_mtime > ckpt.stat().st_mtime:
            kept = np.load(out)
            found[condition] = (list(kept["paths"]), kept["embeddings"])
            continue
        if model is None:
            model, cfg = model_from_checkpoint(ckpt)
            changed(model.meta["crop"], cfg["embedding"], row_changes(row), row)
        order, emb = embeddings_by_condition([model], paths, "cpu", [] if condition == "clean" else [condition],
                                             data=DataSettings(cache_dir="data/cache/crops",
                                                               embedding_cache="data/cache/embeddings.sqlite"),
                                             embedding=EmbeddingSettings(**cfg["embedding"]), seed=0,
                                             covers=TRAINING if covers == "training" else EVALUATION)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(out, paths=np.array([str(p) for p in order]), embeddings=emb[condition][0])
        found[condition] = ([str(p) for p in order], emb[condition][0])
    kept = set.intersection(*(set(k) for k, _ in found.values()))
    order = [str(p) for p in paths if str(p) in kept]
    aligned = {}
    for condition, (names, emb) in found.items():
        index = {p: i for i, p in enumerate(names)}
        aligned[condition] = emb[[index[p] for p in order]]
    return order, aligned


def changed(crop: dict, embedding: dict, changes: list[str], what: str) -> None:
    """key=value changes (values read as config overrides are): a crop setting into `crop` (a model's meta crop
    section, what it crops by), an embedding setting (tta=none: no mirror image) into `embedding`."""
    from dataclasses import fields

    from detection import CropSettings
    from settings import parse_override

    for item in changes:
        (key, value), = parse_override(item).items()
        if key in {f.name for f in fields(CropSettings)}:
            crop[key] = value
        elif key in embedding:
            embedding[key] = value
        else:
            raise SystemExit(f"{what}: {key} is neither a crop nor an embedding setting")


def row_changes(row: str) -> list[str]:
    """ROW:key=value,...: the changes a row names after its checkpoint."""
    return list(filter(None, row.partition(":")[2].split(",")))


def timings(rows: list[str], pairs: list[tuple[str, str]], paths: list[Path], runs: int,
            speed: float = 0.0) -> tuple[dict[str, float], dict[str, float], float]:
    """Milliseconds a photo, end to end (read, find, crop, embed; no cache), of each row alone and of each pair (its
    members as a fusion embeds them: the second reuses the faces the first found), every row in ONNX Runtime on one
    thread with its own test-time augmentation, and each one's ratio to face_recognition's on the same photos in the
    same runs; medians of `runs`. With `speed`, only pairs whose members each reach it alone are timed (a pair takes
    at least as long as its slower member). Returns (ms, ratio, face_recognition's ms)."""
    import torch

    from dataset import DataSettings
    from detection import FaceFinder
    from end_to_end import face_recognition_pass, load_face_recognition
    from pipeline.embedding import embed_paths
    from runtime import EmbeddingSettings
    from settings import load_for_inference

    torch.set_num_threads(1)
    nothing_kept = DataSettings(cache_dir=None, embedding_cache="")
    loaded = {}
    for row in rows:
        model, cfg, _ = load_for_inference(CKPT / row.partition(":")[0] / "best.pt", [],
                                           ["model.runtime=onnx", "model.threads=1"])
        changed(model.meta["crop"], cfg["embedding"], row_changes(row), row)
        loaded[row] = (model, EmbeddingSettings(**cfg["embedding"]))

    def once(members: list[str]) -> float:
        finder = FaceFinder()  # fresh: no face remembered from another pass
        started = time.perf_counter()
        for row in members:
            model, embedding = loaded[row]
            embed_paths(paths, model, "cpu", "timing", data=nothing_kept, embedding=embedding, finder=finder)
        return (time.perf_counter() - started) * 1000 / len(paths)

    fr = load_face_recognition()
    face_recognition_pass(fr, paths[:3])
    for row in rows:
        once([row])  # warm: sessions made, first-call costs paid

    def timed(lines: list[list[str]]) -> tuple[dict[str, float], dict[str, float], float]:
        times: dict[str, list[float]] = {}
        reference = []
        for _ in range(runs):
            reference.append(face_recognition_pass(fr, paths)["seconds"] * 1000 / len(paths))
            for members in lines:
                times.setdefault(" + ".join(members), []).append(once(members))
        ms = {label: float(np.median(t)) for label, t in times.items()}
        ratio = {label: float(np.median([r / m for r, m in zip(reference, t)])) for label, t in times.items()}
        return ms, ratio, float(np.median(reference))

    ms, ratio, fr_ms = timed([[row] for row in rows])
    fast = [(a, b) for a, b in pairs if not speed or min(ratio[a], ratio[b]) >= speed]
    if fast:
        more_ms, more_ratio, _ = timed([list(p) for p in fast])
        ms.update(more_ms)
        ratio.update(more_ratio)
    return ms, ratio, fr_ms


def main(argv: list[str] | None = None) -> int:
    from occlusion.covers import COVERS
    from search.retrieval_settings import RetrievalSettings
    from training.fusion import choose_weights, weight_grid

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="+", help="checkpoints/table/<row>/best.pt")
    parser.add_argument("--covers", choices=["training", "evaluation"], default="training",
                        help="whose covers: training's (what a choice is made on) or the evaluation's (a first look "
                             "only, written to its own section: never a choice)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="time every candidate and pair end to end on N validation photos (0: not timed)")
    parser.add_argument("--runs", type=int, default=3, help="timing runs (the median is kept)")
    parser.add_argument("--time-also", nargs="*", default=[], metavar="ROW",
                        help="rows timed beside the others but not scored (a network whose accuracy is measured elsewhere)")
    parser.add_argument("--speed", type=float, default=0.0, metavar="R",
                        help="choose the most accurate line at least R times face_recognition's photos/s (needs --time)")
    parser.add_argument("--section", nargs=2, metavar=("NAME", "TITLE"),
                        help="write to this section of bench/RESULTS.md instead (a choice of one part, e.g. landmarks)")
    args = parser.parse_args(argv)
    if not (DEV / "train").is_dir():
        print("needs data/dev (bench/table.py prepare): nothing to choose")
        return 0
    started = time.time()
    kinds = list(COVERS)
    paths, labels = val_people()
    owner = {str(p): n for p, n in zip(paths, labels)}
    found = {row: embeddings_of(row, paths, kinds, args.covers) for row in args.rows}
    common = set.intersection(*(set(kept) for kept, _ in found.values()))
    order = [str(p) for p in paths if str(p) in common]
    labels = [owner[p] for p in order]
    aligned = {}
    for row, (kept, emb) in found.items():
        index = {p: i for i, p in enumerate(kept)}
        aligned[row] = {c: e[[index[p] for p in order]] for c, e in emb.items()}
    retrieval = RetrievalSettings()
    results = []  # (label, weights, row of choose_weights)
    for row in args.rows:
        _, rows = choose_weights({c: [aligned[row][c], aligned[row][c]] for c in ["clean", *kinds]}, labels,
                                 [(0.5, 0.5)], retrieval)
        results.append((row, "", rows[0]))
    for a, b in itertools.combinations(args.rows, 2):
        weights, rows = choose_weights({c: [aligned[a][c], aligned[b][c]] for c in ["clean", *kinds]}, labels,
                                       weight_grid(2), retrieval)
        best = next(r for r in rows[2:] if r["weights"] == weights)
        results.append((f"{a} + {b}", f"{weights[0]:.1f} / {weights[1]:.1f}", best))
    results.sort(key=lambda r: -r[2]["mean_top1"])
    ms, fr_ms = {}, None
    ratio: dict[str, float] = {}
    bounded = set()  # pairs not timed: their time a bound, their slower member's
    if args.time:
        timed_rows = args.rows + [r for r in args.time_also if r not in args.rows]
        ms, ratio, fr_ms = timings(timed_rows, list(itertools.combinations(args.rows, 2)),
                                   [Path(p) for p in order[:: max(1, len(order) // args.time)][:args.time]],
                                   args.runs, args.speed)
        for a, b in itertools.combinations(args.rows, 2):  # not timed: no faster than its slower member
            if f"{a} + {b}" not in ms:
                ms[f"{a} + {b}"], ratio[f"{a} + {b}"] = max(ms[a], ms[b]), min(ratio[a], ratio[b])
                bounded.add(f"{a} + {b}")
    head = ["candidate", "weights", "mean top-1", *(["ms a photo", "× face_recognition"] if ms else []), "clean", *kinds]
    whose = ("**training's** covers (occlusion/covers.py TRAINING)" if args.covers == "training" else
             "**the evaluation's** covers (occlusion/covers.py EVALUATION: a first look, never a choice; the choice is "
             "made with training's)")
    given = shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [f"Command: `.venv/bin/python bench/choose_best.py {given}` (commit {git_rev()}, "
             f"{time.strftime('%Y-%m-%d')}; {machine()}; load average {os.getloadavg()[0]:.1f} at the end; embeddings "
             f"kept in outputs/choose/). {len(order)} photos of {len(set(labels))} validation people of data/dev "
             "(held out of training by every row; the test people are not looked at), each against the clean others, "
             f"clean and covered by each kind drawn from {whose} on the photo before its face is looked for. Pairs are fused as model.members fuses them (weights in steps of "
             "0.1, the best shown). Ratio: mean top-1 over the first row alone.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    reference = next(r for label, _, r in results if label == args.rows[0])["mean_top1"]
    for label, weights, r in results:
        bound = label in bounded
        speed = [("≥ " if bound else "") + f"{ms[label]:.0f}", ("≤ " if bound else "") + f"{ratio[label]:.2f}×"] \
            if ms else []
        lines.append(f"| {label} | {weights} | {r['mean_top1']:.3f} ({r['mean_top1'] / reference:.2f}×) | "
                     + "".join(f"{c} | " for c in speed)
                     + " | ".join(f"{r[c]['top1']:.3f}" for c in ["clean", *kinds]) + " |")
    chosen = results[0]
    if ms:
        lines += ["", f"Time: end to end (read, find, crop, embed; no cache) on {args.time} of these photos, ONNX Runtime, "
                  f"one thread, each row with its own test-time augmentation, the median of {args.runs} runs; "
                  f"face_recognition (HOG + dlib's chip and descriptor) {fr_ms:.0f} ms a photo on the same photos in the "
                  "same runs; × face_recognition: the median of the runs' ratios."
                  + (f" A pair marked ≥ was not timed: one of its members alone is slower than {args.speed:g}× "
                     "face_recognition, and a pair takes at least as long as its slower member." if args.speed else "")]
        also = [r for r in args.time_also if r not in args.rows]
        if also:
            lines += ["", "Timed only (a network's time does not depend on its weights: these stand for the "
                      "fine-tuned networks of the same architecture and crop):", "",
                      "| line | ms a photo | × face_recognition |", "|---|---|---|",
                      *(f"| {r} | {ms[r]:.0f} | {ratio[r]:.2f}× |" for r in also)]
        if args.speed:
            fast = [r for r in results if ratio[r[0]] >= args.speed]
            lines.append(f"\nMost accurate regardless of time: {results[0][0]} ({ms[results[0][0]]:.0f} ms, "
                         f"{ratio[results[0][0]]:.2f}× face_recognition).")
            if not fast:
                quickest = min(args.rows, key=lambda r: ms[r])
                lines.append(f"No line is {args.speed:g}× face_recognition's speed: the fastest is "
                             f"{quickest} ({ratio[quickest]:.2f}×).")
            chosen = fast[0] if fast else chosen
    what = f" among lines at least {args.speed:g}× face_recognition's photos/s" if args.speed and ms else ""
    lines += ["", f"Chosen{what}: **{chosen[0]}** ({chosen[1] or 'alone'}). "
              f"{(time.time() - started) / 60:.0f} min for what was not kept."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write and args.section:
        write_section(args.section[0], f"## {args.section[1]}\n\n" + text)
    elif not args.no_write and args.covers == "training":
        write_section("choice", "## config/best.yaml chosen on validation people over every cover\n\n" + text)
    elif not args.no_write:
        write_section("first-look", "## Fusion, a first look on validation people with the evaluation's covers"
                                    "\n\n" + text.replace("Chosen: ", "Best here (not a choice): "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
