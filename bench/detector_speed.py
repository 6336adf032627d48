"""Face detectors compared on CelebA and LFW: how often each finds a face, how fast it crops, and
where the detectors disagree (issue 7).

    .venv/bin/python bench/detector_speed.py                          # the full bench (about 15-25 min on 2 cores)
    .venv/bin/python bench/detector_speed.py --limit 50 --runs 1      # a quick try

Needs ../shared/data/celeba and ../shared/data/lfw_train (identity folders; a missing one is
skipped with a message). The crop settings are config/default.yaml's `crop:` section with the
detector and alignment swapped in.

1. Detection share, on ALL photos: one pass per detector with `fallback: []` (the detector alone),
   the boxes kept in memory for 3 and the figure; also how many photos have several faces.
2. Photos per second on a seeded sample (--sample photos, half from each data set), median of
   --runs runs: `crop_face` on decoded photos (detection + alignment + resize, no cache); end to end
   `crop_paths` into a fresh cache folder (reading, cropping, writing the PNG); and a second
   `crop_paths` pass over the warm cache. Align `none` for every detector, `similarity` for the
   detectors with landmarks (haar has none: its similarity crop is its square crop). These passes
   keep the default fallback chain.
3. Disagreement per pair of detectors: among photos where both find a face, the share whose largest
   boxes overlap with IoU < 0.3; and the share of photos where only one of the two finds a face.

Writes the `detectors` section of bench/RESULTS.md and figures/detectors.png (6 photos where
detectors disagree, each detector's largest box and MTCNN's five landmarks).
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import datetime
import os
import random
import statistics
import subprocess
import tempfile
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, machine, threads_before_imports, write_section  # noqa: E402

threads_before_imports()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402


from dataset import list_images  # noqa: E402
from detection import (DETECTORS, CropSettings, FaceFinder, ImageReadError, Models, crop_paths, detect,  # noqa: E402
                       read_image, similarity_matrix)
from settings import load_config  # noqa: E402

DATASETS = {"CelebA": "../shared/data/celeba", "LFW": "../shared/data/lfw_train"}  # relative to the repo root
NAMES = list(DETECTORS)  # haar, mtcnn, yunet
IOU_DISAGREE = 0.3
COLOURS = {"haar": "tab:blue", "mtcnn": "tab:orange", "yunet": "tab:green"}
FIGURE = ROOT / "figures" / "detectors.png"


def crop_cfg(base: CropSettings, detector: str, align: str, fallback: list | None = None) -> CropSettings:
    return replace(base, detector=detector, align=align, fallback=base.fallback if fallback is None else fallback)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "–"


def list_photos(limit: int | None, seed: int) -> dict[str, list[Path]]:
    photos = {}
    for name, rel in DATASETS.items():
        folder = ROOT / rel
        if not folder.is_dir():
            print(f"skipping {name}: {folder} not found (expected identity folders <person>/<photo>)", flush=True)
            continue
        found = list_images(folder, recursive=True)
        if limit and len(found) > limit:
            found = sorted(random.Random(seed).sample(found, limit))
        people = len({p.parent for p in found})
        print(f"{name}: {len(found)} photos of {people} people in {rel}", flush=True)
        photos[name] = found
    return photos


# ---------------------------------------------------------------- 1. detection on all photos

def detection_pass(photos: list[tuple[str, Path]], base: CropSettings) -> tuple[dict, dict, list[str]]:
    """One pass per detector over every photo (fallback []): {detector: [Detections or None]} (None:
    unreadable), {detector: seconds spent in detect()}, and the unreadable files."""
    found: dict[str, list] = {}
    seconds: dict[str, float] = {}
    unreadable: set[str] = set()
    models = Models()  # each detector loaded once, as a FaceFinder keeps them
    for name in NAMES:
        cfg = crop_cfg(base, name, "none", fallback=[])
        out, spent = [], 0.0
        for _, path in tqdm(photos, desc=f"detecting ({name})", unit="img", mininterval=5):
            try:
                image = read_image(path)
            except ImageReadError as exc:
                unreadable.add(str(exc))
                out.append(None)
                continue
            started = time.perf_counter()
            out.append(detect(image, cfg, name, models))
            spent += time.perf_counter() - started
        found[name], seconds[name] = out, spent
        hits = sum(1 for d in out if d is not None and len(d))
        print(f"{name}: a face in {hits} of {len(out)} photos, {1000 * spent / max(1, len(out)):.1f} ms/photo", flush=True)
    return found, seconds, sorted(unreadable)


def usable_landmarks(det) -> bool:
    if det is None or not len(det) or det.landmarks is None:
        return False
    try:
        similarity_matrix(det.landmarks[0], 112)
        return True
    except ValueError:
        return False


def share_table(photos, found, seconds, sets) -> str:
    head = ("| detector | " + " | ".join(f"face found, {s}" for s in sets) + " | **face found, all** | "
            + " | ".join(f"several faces, {s}" for s in sets) + " | several faces, all | no face (all) | "
            "similarity-aligned (all) | detect only, ms/photo |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    n_all = len(photos)
    for name in NAMES:
        dets = found[name]
        hit = {s: 0 for s in sets}
        several = {s: 0 for s in sets}
        count = {s: 0 for s in sets}
        for (s, _), d in zip(photos, dets):
            count[s] += 1
            if d is not None and len(d):
                hit[s] += 1
                several[s] += len(d) > 1
        hits, sev = sum(hit.values()), sum(several.values())
        aligned = sum(usable_landmarks(d) for d in dets)
        rows.append(f"| {name} | " + " | ".join(f"{pct(hit[s], count[s])} ({hit[s]})" for s in sets)
                    + f" | **{pct(hits, n_all)}** ({hits}) | "
                    + " | ".join(f"{several[s]} ({pct(several[s], count[s])})" for s in sets)
                    + f" | {sev} ({pct(sev, n_all)}) | {n_all - hits} | {aligned} ({pct(aligned, n_all)}) | "
                    f"{1000 * seconds[name] / max(1, n_all):.1f} |")
    return "\n".join(rows)


# ---------------------------------------------------------------- 3. disagreement

def pair_stats(photos, found, sets) -> tuple[str, list[tuple]]:
    """The disagreement table, and for the figure: (index, kind, text) of disagreeing photos."""
    head = ("| pair | both find a face | **largest boxes IoU < 0.3** | " + " | ".join(f"IoU < 0.3, {s}" for s in sets)
            + " | median IoU | **only one finds a face** | only the first | only the second |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    disagreements = []
    n_all = len(photos)
    for a, b in combinations(NAMES, 2):
        both = {s: 0 for s in sets}
        low = {s: 0 for s in sets}
        ious, only_a, only_b = [], 0, 0
        for i, ((s, _), da, db) in enumerate(zip(photos, found[a], found[b])):
            fa, fb = da is not None and len(da) > 0, db is not None and len(db) > 0
            if fa and fb:
                v = iou(da.boxes[0], db.boxes[0])
                ious.append(v)
                both[s] += 1
                if v < IOU_DISAGREE:
                    low[s] += 1
                    disagreements.append((i, "iou", f"{a}×{b} IoU {v:.3f}"))
            elif fa and db is not None:
                only_a += 1
                disagreements.append((i, "miss", f"only {a} finds a face (not {b})"))
            elif fb and da is not None:
                only_b += 1
                disagreements.append((i, "miss", f"only {b} finds a face (not {a})"))
        nb, nl = sum(both.values()), sum(low.values())
        rows.append(f"| {a} × {b} | {nb} ({pct(nb, n_all)}) | **{pct(nl, nb)}** ({nl}) | "
                    + " | ".join(f"{pct(low[s], both[s])} ({low[s]})" for s in sets)
                    + f" | {statistics.median(ious) if ious else float('nan'):.2f} | "
                    f"**{pct(only_a + only_b, n_all)}** ({only_a + only_b}) | {only_a} ({a}) | {only_b} ({b}) |")
    return "\n".join(rows), disagreements


def draw_figure(photos, found, disagreements, seed: int) -> str | None:
    """6 disagreeing photos (half with boxes far apart, half where a detector misses, as available),
    each detector's largest box and MTCNN's five landmarks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    by_photo: dict[int, list[tuple[str, str]]] = {}
    for i, kind, text in disagreements:
        by_photo.setdefault(i, []).append((kind, text))
    if not by_photo:
        return None
    rng = random.Random(seed)
    far = sorted(i for i, v in by_photo.items() if any(k == "iou" for k, _ in v))
    miss = sorted(i for i in by_photo if i not in set(far))
    picks = rng.sample(far, min(3, len(far)))
    picks += rng.sample(miss, min(6 - len(picks), len(miss)))
    rest = sorted(set(far) - set(picks))
    picks += rng.sample(rest, min(6 - len(picks), len(rest)))
    fig, axes = plt.subplots(2, 3, figsize=(10, 7.4))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picks):
        s, path = photos[i]
        ax.imshow(read_image(path))
        for name in NAMES:
            d = found[name][i]
            if d is None or not len(d):
                continue
            x, y, w, h = (float(v) for v in d.boxes[0])
            ax.add_patch(Rectangle((x, y), w, h, fill=False, lw=2, ec=COLOURS[name]))
            if name == "mtcnn" and d.landmarks is not None:
                ax.scatter(d.landmarks[0][:, 0], d.landmarks[0][:, 1], s=14, c=COLOURS[name],
                           edgecolors="white", linewidths=0.6, zorder=3)
        missing = [n for n in NAMES if found[n][i] is not None and not len(found[n][i])]
        note = "no face: " + ", ".join(missing) if missing else by_photo[i][0][1]
        ax.set_title(f"{s}: {path.parent.name}/{path.name}\n{note}", fontsize=8)
    handles = [Line2D([], [], color=COLOURS[n], lw=2, label=f"{n} (largest box)") for n in NAMES]
    handles.append(Line2D([], [], color=COLOURS["mtcnn"], marker="o", ls="", markeredgecolor="white",
                          label="mtcnn landmarks"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle("Photos where the detectors disagree (largest box per detector)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=80)
    plt.close(fig)
    return f"{len(picks)} photos"


# ---------------------------------------------------------------- 2. speed on a sample

def speed(sample: list[Path], base: CropSettings, runs: int, with_landmarks: set[str]) -> tuple[list[tuple[str, str]], dict]:
    """Photos per second of each (detector, align), `runs` times each, configurations interleaved
    within a run so that a burst of load elsewhere hits them all alike."""
    configs = [(n, a) for n in NAMES for a in ("none", "similarity")
               if a == "none" or n in with_landmarks]
    images = [read_image(p) for p in tqdm(sample, desc="decoding the sample", unit="img", mininterval=5)]
    rates: dict[tuple, dict[str, list[float]]] = {c: {"crop": [], "cold": [], "warm": []} for c in configs}
    finder = FaceFinder()  # one for the whole timing, as the process-wide detectors and memory were before
    n = len(sample)
    for r in range(runs):
        for det, align in tqdm(configs, desc=f"timing, run {r + 1}/{runs}", unit="config"):
            cfg = crop_cfg(base, det, align)
            started = time.perf_counter()
            for image in images:
                finder.crop_face(image, cfg)
            rates[(det, align)]["crop"].append(n / (time.perf_counter() - started))
            with tempfile.TemporaryDirectory(prefix="bench_detectors_") as cache:
                started = time.perf_counter()
                _, report = crop_paths(sample, cfg, cache, desc=f"{det}/{align} cold", finder=finder)
                rates[(det, align)]["cold"].append(n / (time.perf_counter() - started))
                started = time.perf_counter()
                _, report = crop_paths(sample, cfg, cache, desc=f"{det}/{align} warm", finder=finder)
                rates[(det, align)]["warm"].append(n / (time.perf_counter() - started))
                if report.counts["cached"] != n - len(report.failed) - len(report.no_face):
                    print(f"warning: {det}/{align}: warm pass took {report.counts['cached']} of {n} from the cache")
            print(f"run {r + 1} {det}/{align}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in rates[(det, align)].items()),
                  flush=True)
    return configs, rates


def speed_table(configs, rates) -> str:
    def cell(values: list[float], bold: bool = False) -> str:
        med = f"{statistics.median(values):.1f}"
        med = f"**{med}**" if bold else med
        return med + (f" ({', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else "")

    rows = ["| detector | align | crop only: `crop_face` on decoded photos | end to end, fresh cache: `crop_paths` | "
            "warm cache: second `crop_paths` |", "|---|---|---|---|---|"]
    for det, align in configs:
        r = rates[(det, align)]
        rows.append(f"| {det} | {align} | {cell(r['crop'])} | {cell(r['cold'], True)} | {cell(r['warm'])} |")
    return "\n".join(rows)


# ---------------------------------------------------------------- main

def command_line(args) -> str:
    parts = [".venv/bin/python bench/detector_speed.py"]
    defaults = {"sample": 300, "runs": 3, "limit": None, "threads": 1}
    for key, default in defaults.items():
        if getattr(args, key) != default:
            parts.append(f"--{key} {getattr(args, key)}")
    return " ".join(parts)


def tree_state() -> str:
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return " plus uncommitted changes in the working tree" if dirty else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=300, help="photos timed (half from each data set)")
    parser.add_argument("--runs", type=int, default=3, help="timing runs; the median is reported")
    parser.add_argument("--limit", type=int, default=None, help="at most this many photos per data set (a quick try)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for OpenCV and OpenMP (yunet); 0: the libraries' defaults (one per core)")
    args = parser.parse_args()
    if args.threads > 0:  # OMP_NUM_THREADS was set before the imports
        cv2.setNumThreads(args.threads)
    started = time.time()
    load_start = os.getloadavg()[0]
    cfg = load_config()
    base, seed = CropSettings(**cfg["crop"]), int(cfg["seed"])

    by_set = list_photos(args.limit, seed)
    if not by_set:
        print("no data set found: nothing to bench (looked for " + ", ".join(DATASETS.values()) + ")")
        return
    sets = list(by_set)
    photos = [(s, p) for s in sets for p in by_set[s]]

    # 1 and 3: every photo, each detector once
    found, seconds, unreadable = detection_pass(photos, base)
    shares = share_table(photos, found, seconds, sets)
    pairs, disagreements = pair_stats(photos, found, sets)
    drawn = draw_figure(photos, found, disagreements, seed)
    print(shares, pairs, sep="\n\n", flush=True)

    # 2: speed on a seeded sample, half from each set
    rng = random.Random(seed)
    per_set = max(1, args.sample // len(sets))
    sample = [p for s in sets for p in sorted(rng.sample(by_set[s], min(per_set, len(by_set[s]))))]
    with_landmarks = {n for n in NAMES if any(d is not None and d.landmarks is not None for d in found[n])}
    configs, rates = speed(sample, base, args.runs, with_landmarks)
    speeds = speed_table(configs, rates)
    minutes = (time.time() - started) / 60
    threads = (f"{args.threads} thread{'s' if args.threads > 1 else ''} for OpenCV and OpenMP (`--threads {args.threads}`: "
               "with the libraries' defaults, one thread per core, yunet's OpenMP threads slowed it down up to "
               "17 times in a side check whenever another job held a core)") if args.threads > 0 else \
        "the libraries' default threads (one per core)"
    load_end = os.getloadavg()[0]

    counts = ", ".join(f"{s} {len(by_set[s])} photos of {len({p.parent for p in by_set[s]})} people ({DATASETS[s]})"
                       for s in sets)
    sample_counts = ", ".join(f"{sum(1 for p in sample if p in set(by_set[s]))} {s}" for s in sets)
    settings = (f"margin {base.margin}, size {base.size}, min_size {base.min_size}, min_confidence "
                f"{base.min_confidence}, haar {base.cascade} scale_factor {base.scale_factor} "
                f"min_neighbors {base.min_neighbors}")
    figure = (f"![Photos where the detectors disagree: each detector's largest box, MTCNN's landmarks]"
              f"(../figures/detectors.png)\n\n`figures/detectors.png`: {drawn} where the detectors disagree "
              f"(seeded pick among them; half with far-apart boxes, half where one misses).") if drawn else \
        "No photo where the detectors disagree, so no figure."
    md = f"""## Face detectors: faces found, speed, disagreement

Command: `{command_line(args)}` (commit {git_rev()}{tree_state()}), {datetime.date.today().isoformat()},
{minutes:.0f} min in all. Machine: {machine()}; one process, {threads} (load average
{load_start:.1f} at the start, {load_end:.1f} at the end, this bench's own threads included).
Data: {counts}{f'; unreadable: {len(unreadable)}' if unreadable else ''}.
Crop settings: config/default.yaml's `crop:` ({settings}) with the detector and alignment swapped in.

**Faces found by the detector alone** (`fallback: []`), every photo, one pass per detector.
"Several faces": photos where the detector reports more than one (the largest is cropped).
"Similarity-aligned": photos whose largest face has usable five-point landmarks (`align: similarity`
falls back to the square crop for the others: all of haar's). Detect-only time: one pass over every photo.

{shares}

**Photos per second** on a seeded sample of {len(sample)} photos ({sample_counts}), median of {args.runs}
run{'s' if args.runs > 1 else ''} (runs in brackets), with the default fallback chain (`{base.fallback}`).
Crop only: `crop_face` on photos decoded beforehand (detection, alignment, resize; no cache). End to
end: `crop_paths` into a fresh, empty cache folder (reading the file, cropping, writing the PNG).
Warm cache: the same `crop_paths` again over that cache (hashing the file, reading the cached PNG).
{', '.join(sorted(set(NAMES) - with_landmarks)) or 'No detector'} gives no landmarks, so its `similarity` crop is its square crop (not timed again).

{speeds}

**Disagreement between detectors** on every photo: among photos where both find a face, the share
whose largest boxes have IoU < {IOU_DISAGREE} (a different face or a different place); and the share of all
photos where only one of the two finds a face. Boxes differ in shape by design (haar's are square,
mtcnn's and yunet's taller than wide), so matching faces still give IoU well above 0.3 but below 1.

{pairs}

{figure}
"""
    write_section("detectors", md)
    print(md)
    print(f"total {minutes:.1f} min; figure: {FIGURE if drawn else 'none'}")


if __name__ == "__main__":
    main()
