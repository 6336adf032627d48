"""The occluded development competition (issue 17): data/dev with one black square on every query
photo, made reproducibly, then faces found per detector and chain, and retrieval scores, on it.

    .venv/bin/python bench/occluded.py make                 # data/dev_occluded from data/dev (bench/table.py prepare)
    .venv/bin/python bench/occluded.py detect [LABEL ...]   # faces found by each detector and chain (or those named)
    .venv/bin/python bench/occluded.py score CKPT [...]     # clean, occluded, cutout and gamma queries of data/dev
    .venv/bin/python bench/occluded.py choose CKPT [--only LABEL]  # each chain's retrieval on the validation people
    .venv/bin/python bench/occluded.py write                # the section of bench/RESULTS.md

The square: its side 30% of the photo's shorter side, its centre drawn uniformly in the middle half
of the photo (where the face is in a portrait: an eye, the nose or the mouth hidden, as sunglasses,
a hand or a mask would), seeded by the photo's name, so every run and machine makes the same copy.
The gallery is data/dev's, untouched (linked). `evaluate.degrade`'s cutout and gamma degrade the
query *crop* instead (after detection); the occluded copy degrades the *photo*, so detection must
survive it too.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, machine, write_section  # noqa: E402

DEV = ROOT / "data" / "dev"
OCCLUDED = ROOT / "data" / "dev_occluded"
OUT = ROOT / "outputs" / "occluded"
SIDE, SEED = 0.30, 0

# Detection chains compared on the occluded queries (crop.* overrides; dlib's chip, what dlib_resnet sees).
CHAINS: dict[str, list[str]] = {
    "haar": ["crop.detector=haar", "crop.fallback=[]"],
    "mtcnn": ["crop.detector=mtcnn", "crop.fallback=[]"],
    "mtcnn, loose (stages 0.5/0.6/0.6, score 0.5)": ["crop.detector=mtcnn", "crop.fallback=[]",
                                                     "crop.mtcnn_thresholds=[0.5,0.6,0.6]", "crop.min_confidence=0.5"],
    "yunet (score 0.6)": ["crop.detector=yunet", "crop.fallback=[]", "crop.yunet_confidence=0.6"],
    "yunet (score 0.3)": ["crop.detector=yunet", "crop.fallback=[]", "crop.yunet_confidence=0.3"],
    "mtcnn → haar → centre (best.yaml until now)": ["crop.detector=mtcnn", "crop.fallback=[haar,center]"],
    "mtcnn → yunet 0.3 → haar → guess": ["crop.detector=mtcnn", "crop.fallback=[yunet,haar,guess]",
                                        "crop.yunet_confidence=0.3"],
    "yunet 0.3 → mtcnn loose → haar → guess": ["crop.detector=yunet", "crop.fallback=[mtcnn,haar,guess]",
                                              "crop.yunet_confidence=0.3", "crop.mtcnn_thresholds=[0.5,0.6,0.6]",
                                              "crop.min_confidence=0.5"],
}


# The chains above as they ran before crop.subject, yunet_low_confidence and fill_dark_patches existed.
CHAINS = {label: overrides + ["crop.subject=largest", "crop.yunet_low_confidence=1", "crop.fill_dark_patches=false"]
          for label, overrides in CHAINS.items()}


def square(image, name: str):
    """A copy of the photo with the seeded black square."""
    import numpy as np

    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{SEED}:{name}".encode()).digest()[:8], "little"))
    h, w = image.shape[:2]
    side = max(1, int(round(SIDE * min(h, w))))
    cx, cy = rng.uniform(w / 4, 3 * w / 4), rng.uniform(h / 4, 3 * h / 4)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    out = image.copy()
    out[max(0, y0):max(0, y0 + side), max(0, x0):max(0, x0 + side)] = 0
    return out


def make() -> None:
    """data/dev_occluded: test/query with the squares (PNG would change the bytes more than needed:
    JPEG quality 95), test/gallery linked to data/dev's, the ground truth renamed dev_occluded."""
    from PIL import Image

    from detection import read_image

    if not (DEV / "ground_truth.json").exists():
        raise SystemExit(f"{DEV} is missing: run `bench/table.py prepare` first")
    query = OCCLUDED / "test" / "query"
    query.mkdir(parents=True, exist_ok=True)
    for photo in sorted((DEV / "test" / "query").iterdir()):
        target = query / photo.name
        if not target.exists():
            Image.fromarray(square(read_image(photo), photo.name)).save(target, format="JPEG", quality=95)
    gallery = OCCLUDED / "test" / "gallery"
    if not gallery.exists():
        gallery.symlink_to((DEV / "test" / "gallery").resolve(), target_is_directory=True)
    gt = json.loads((DEV / "ground_truth.json").read_text())
    (OCCLUDED / "ground_truth.json").write_text(json.dumps(dict(gt, name="dev_occluded")))
    # The validation people of the training split (what train.py holds out with data.val_fraction 0.1, seed 0),
    # covered the same way: what a detector chain is chosen on, never the test queries.
    for photo in val_photos():
        target = OCCLUDED / "val" / photo.parent.name / photo.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(square(read_image(photo), photo.name)).save(target, format="JPEG", quality=95)
    print(f"{OCCLUDED}: {len(list(query.iterdir()))} occluded queries, the gallery of {DEV}; "
          f"{len(val_photos())} occluded validation photos in {OCCLUDED / 'val'}")


def val_photos() -> list[Path]:
    """The photos of the validation people train.py holds out of data/dev/train (val_fraction 0.1, seed 0)."""
    from dataset import identity_split, list_identities

    people = list_identities(DEV / "train", 2)
    _, val = identity_split(list(people), 0.1, 0)
    return [p for name in val for p in people[name]]


def chains() -> dict[str, list[str]]:
    """The compared chains, and config/best.yaml's own (whatever it is now)."""
    from detection import CropSettings, describe_chain
    from settings import load_config

    best = load_config([str(ROOT / "config" / "best_dlib.yaml")])["crop"]
    steps = describe_chain(CropSettings(**best))
    own = [f"crop.{k}={json.dumps(v)}" for k, v in best.items()]
    return {**CHAINS, f"config/best_dlib.yaml: {steps}": own}


def detect(only: list[str]) -> None:
    """Faces found on the occluded (and clean) queries by each chain (or those whose label holds one of
    `only`, the others' results kept), with dlib's chip: which step found each face, and how many photos
    reached the network unaligned (a centre crop)."""
    from detection import CropSettings, crop_paths
    from settings import load_config

    OUT.mkdir(parents=True, exist_ok=True)
    results = json.loads((OUT / "detect.json").read_text()) if only and (OUT / "detect.json").exists() else {}
    for label, overrides in chains().items():
        if only and not any(o in label for o in only):
            continue
        cfg = load_config([str(ROOT / "config" / "best_dlib.yaml")], overrides)
        for which, photos in (("validation, occluded", sorted((OCCLUDED / "val").rglob("*.jpg"))),
                              ("validation, clean", val_photos()),
                              ("test queries, occluded", sorted((OCCLUDED / "test" / "query").iterdir())),
                              ("test queries, clean", sorted((DEV / "test" / "query").iterdir()))):
            started = time.perf_counter()
            _, report = crop_paths(photos, CropSettings(**cfg["crop"]), None, desc=f"{label}, {which}")
            seconds = (time.perf_counter() - started) / len(photos)
            steps = {p: len(v) for p, v in report.by_path.items()}
            results[f"{label} | {which}"] = {"photos": len(photos), "steps": steps, "no_face": len(report.no_face),
                                             "s_per_photo": seconds}
            print(label, which, steps, f"{seconds * 1000:.0f} ms/photo", flush=True)
    (OUT / "detect.json").write_text(json.dumps(results, indent=1))


def score(checkpoints: list[str], tag: str = "") -> None:
    """Each checkpoint's top-1/5/10, mAP@10 and MAP@R on data/dev with clean, occluded (the photo
    copy), cutout and gamma (evaluate.degrade, on the crop) queries, with its own retrieval settings."""
    from competition import load_ground_truth
    from pipeline.protocol import score_embeddings
    from search.retrieval_settings import RetrievalSettings
    from settings import load_for_inference
    from pipeline.embedding import embed_folder
    from settings import embed_settings

    OUT.mkdir(parents=True, exist_ok=True)
    for checkpoint in checkpoints:
        model, cfg, device = load_for_inference(checkpoint, [], ["data.cache_dir=data/cache/crops"])
        gt = load_ground_truth(DEV)
        gallery = embed_folder(DEV / "test" / "gallery", model, device, **embed_settings(cfg))
        g_index = {n: j for j, n in enumerate(gallery.names)}
        out = {"checkpoint": checkpoint, "tta": cfg["embedding"]["tta"], "rerank": cfg["retrieval"]["rerank"]}
        for kind, folder, degrade in (("clean", DEV, "none"), ("occluded", OCCLUDED, "none"),
                                      ("cutout", DEV, "cutout"), ("gamma", DEV, "gamma")):
            queries = embed_folder(folder / "test" / "query", model, device, degradation=degrade, **embed_settings(cfg))
            keep = [i for i, q in enumerate(queries.names) if q in gt["queries"]]
            correct = [{g_index[g] for g in gt["queries"][queries.names[i]]} for i in keep]
            report, _ = score_embeddings(queries.embeddings[keep], gallery.embeddings, correct,
                                         RetrievalSettings(**cfg["retrieval"]))
            scale = len(keep) / len(gt["queries"])  # a query left out counts as wrong
            out[kind] = {k: report[k] * (scale if k.startswith("top") else 1) for k in ("top1", "top5", "top10", "map@10", "map@r")}
            print(checkpoint, kind, {k: round(v, 3) for k, v in out[kind].items()}, flush=True)
        name = tag or Path(checkpoint).parent.name
        (OUT / f"score_{name}.json").write_text(json.dumps(out, indent=1))


# Chains a checkpoint is re-scored with on the validation people (`choose`); each names every setting it depends
# on, so config/best.yaml's own values do not leak into the others.
ONE = ["crop.yunet_low_confidence=1", "crop.fill_dark_patches=false"]  # no second look at YuNet's weak faces, no filling
CHOICES: dict[str, list[str]] = {
    "mtcnn → yunet 0.3 → haar → guess, largest face": ["crop.detector=mtcnn", "crop.fallback=[yunet,haar,guess]",
                                                       "crop.yunet_confidence=0.3", "crop.subject=largest", *ONE],
    "mtcnn → yunet 0.3 → haar → guess, central face": ["crop.detector=mtcnn", "crop.fallback=[yunet,haar,guess]",
                                                       "crop.yunet_confidence=0.3", "crop.subject=central", *ONE],
    "yunet 0.3 → mtcnn → haar → guess, largest face": ["crop.detector=yunet", "crop.fallback=[mtcnn,haar,guess]",
                                                       "crop.yunet_confidence=0.3", "crop.subject=largest", *ONE],
    "yunet 0.3 → mtcnn → haar → guess, central face": ["crop.detector=yunet", "crop.fallback=[mtcnn,haar,guess]",
                                                       "crop.yunet_confidence=0.3", "crop.subject=central", *ONE],
    "yunet 0.6 → mtcnn → haar → guess, central face": ["crop.detector=yunet", "crop.fallback=[mtcnn,haar,guess]",
                                                       "crop.yunet_confidence=0.6", "crop.subject=central", *ONE],
    "yunet 0.6, else 0.3 → mtcnn → haar → guess, central face": [
        "crop.detector=yunet", "crop.fallback=[mtcnn,haar,guess]", "crop.yunet_confidence=0.6",
        "crop.yunet_low_confidence=0.3", "crop.subject=central", "crop.fill_dark_patches=false"],
    "yunet 0.6, else 0.3 → mtcnn → haar → guess, central face, dark patches filled": [
        "crop.detector=yunet", "crop.fallback=[mtcnn,haar,guess]", "crop.yunet_confidence=0.6",
        "crop.yunet_low_confidence=0.3", "crop.subject=central", "crop.fill_dark_patches=true"],
}


def choose(checkpoint: str, only: str = "") -> None:
    """Each chain of CHOICES with one checkpoint's network, on the validation people only: every photo
    against the others (clean), and every occluded copy against the others' clean photos, with the
    detection time per photo (clean photos, fresh crops), so a chain is chosen without the test people."""
    from pipeline.protocol import score_leave_one_out
    from search.retrieval_settings import RetrievalSettings
    from settings import load_for_inference
    from pipeline.embedding import embed_paths
    from settings import embed_settings
    from settings import load_config

    OUT.mkdir(parents=True, exist_ok=True)
    clean = val_photos()
    covered = [OCCLUDED / "val" / p.parent.name / p.name for p in clean]
    labels = [p.parent.name for p in clean]
    out = OUT / f"choose_{Path(checkpoint).parent.name}.json"
    results = json.loads(out.read_text()) if only and out.exists() else {}
    for label, overrides in CHOICES.items():
        if only not in label:
            continue
        cache = tempfile.mkdtemp(prefix="facematch-choose-")  # fresh crops and no embedding cache: timed honestly
        model, cfg, device = load_for_inference(checkpoint, [], [f"data.cache_dir={cache}", "data.embedding_cache="])
        chain = load_config([str(ROOT / "config" / "best_dlib.yaml")], overrides)["crop"]
        keys = [o.split("=", 1)[0].removeprefix("crop.") for o in overrides]
        model.meta["crop"] = {**model.meta["crop"], **{k: chain[k] for k in keys}}  # the network's crops, re-chained
        started = time.perf_counter()
        plain = embed_paths(clean, model, device, "validation", **embed_settings(cfg))
        seconds = (time.perf_counter() - started) / len(clean)
        hidden = embed_paths(covered, model, device, "validation, occluded", **embed_settings(cfg))
        if plain.names != [p.name for p in clean] or hidden.names != [p.name for p in covered]:
            raise SystemExit(f"{label}: a validation photo was left out; every chain here ends with guess")
        retrieval = RetrievalSettings(**cfg["retrieval"])
        row = {"clean": score_leave_one_out(plain.embeddings, labels, retrieval),
               "occluded": score_leave_one_out(plain.embeddings, labels, retrieval, hidden.embeddings),
               "s_per_photo": seconds}
        results[label] = row
        shutil.rmtree(cache, ignore_errors=True)
        print(label, {f"{k} {m}": round(row[k][m], 3) for k in ("clean", "occluded") for m in ("top1", "map@r")},
              f"{seconds * 1000:.0f} ms/photo (crop + embed)", flush=True)
    out.write_text(json.dumps(results, indent=1))


def write() -> None:
    detect_rows, score_rows = [], []
    if (OUT / "detect.json").exists():
        for key, r in json.loads((OUT / "detect.json").read_text()).items():
            label, which = key.split(" | ")
            found = sum(v for p, v in r["steps"].items() if p not in ("center", "guess"))
            steps = ", ".join(f"{v} {p}" for p, v in r["steps"].items())
            detect_rows.append(f"| {label} | {which} | {found} of {r['photos']} ({found / r['photos']:.1%}) | "
                               f"{steps or 'none'} | {r['no_face']} | {1000 * r['s_per_photo']:.0f} |")
    for path in sorted(OUT.glob("score_*.json")):
        r = json.loads(path.read_text())
        cells = " | ".join(f"{r[k]['top1']:.3f} / {r[k]['map@r']:.3f}" for k in ("clean", "occluded", "cutout", "gamma"))
        score_rows.append(f"| {path.stem[len('score_'):]} | {r['tta']}, {'+'.join(r['rerank']) or 'none'} | {cells} |")
    choose_rows = []
    for path in sorted(OUT.glob("choose_*.json")):
        for label, r in json.loads(path.read_text()).items():
            cells = " | ".join(f"{r[k]['top1']:.3f} / {r[k]['map@r']:.3f}" for k in ("clean", "occluded"))
            choose_rows.append(f"| {path.stem[len('choose_'):]} | {label} | {cells} | {1000 * r['s_per_photo']:.0f} |")
    gt = json.loads((OCCLUDED / "ground_truth.json").read_text()) if (OCCLUDED / "ground_truth.json").exists() else {}
    md = f"""## The occluded development competition

Command: `.venv/bin/python bench/occluded.py make && .venv/bin/python bench/occluded.py detect && .venv/bin/python
bench/occluded.py score CKPT ...` (commit {git_rev()}). Machine: {machine()}.
`data/dev_occluded`: the development competition's {len(gt.get('queries', {}))} query photos, each with one black
square (side {SIDE:.0%} of the photo's shorter side, centre drawn uniformly in the middle half of the photo, seeded
by the file name), against the untouched gallery of {len(gt.get('gallery', []))} photos.

**Faces found** on the validation people's photos (the chain is chosen on these) and on the test queries (dlib's chip, crop.align=dlib; a face counts when a detector found it, not
`guess` (dlib's landmarks in a box guessed at the centre: aligned, but nobody saw a face there) nor the centre
square; ms per photo: reading, detection and alignment, no cache, one process, one thread; timed while a training shared
the 2 cores, so compare them within this table only; bench/RESULTS.md's end-to-end section times the chain alone):

| chain | photos | faces found by a detector | by step | left out | ms/photo |
|---|---|---|---|---|---|
{chr(10).join(detect_rows) or '| (not run yet) | | | | | |'}

**Choosing the chain** (`bench/occluded.py choose CKPT`): one checkpoint's network with each chain, on the
validation people only (703 photos of 123 people held out of training): every clean photo against all the others,
and every occluded copy against the others' clean photos (top-1 / MAP@R, no re-ranking); ms/photo: crop (fresh
cache) and embed (flip TTA) of the clean photos, one thread. "central face": of several faces, the one with the
largest area less twice its squared distance from the photo's centre (insightface's rule), not the largest;
"yunet 0.6, else 0.3": faces scoring 0.3–0.6 only where none scores 0.6 (`crop.yunet_low_confidence`).

| checkpoint | chain | validation clean | validation occluded | ms/photo |
|---|---|---|---|---|
{chr(10).join(choose_rows) or '| (not run yet) | | | | |'}

**Retrieval** (top-1 / MAP@R; each checkpoint with its own retrieval settings; occluded: the photo copy above;
cutout and gamma: `evaluate.degrade` on the query crops):

| checkpoint | TTA, re-ranking | clean | occluded | cutout | gamma |
|---|---|---|---|---|---|
{chr(10).join(score_rows) or '| (not run yet) | | | | | |'}

Rows: `frozen_mtcnn_haar_centre` is dlib's network as it is with config/best.yaml's chain before issue 17 (MTCNN →
Haar → centre square); `frozen_yunet_first` the same network with YuNet (score 0.3) → loose MTCNN → Haar → guess;
`frozen_best_chain` the same network with MTCNN → YuNet 0.3 → Haar → guess (config/best.yaml's chain before the
speed work); `best_finetuned_mtcnn_first` config/best.yaml's fine-tuned network trained and scored with that chain
(bench/table.py's dlib_ft_best_mtcnn); `best_finetuned_nofill` YuNet 0.6, else 0.3 → MTCNN → Haar → guess, the
central face, the network fine-tuned on that chain's crops (dlib_ft_best_nofill); `best_finetuned` config/best.yaml
now (dlib_ft_best): the same chain with black patches filled before faces and landmarks are looked for
(`crop.fill_dark_patches`), fine-tuned on its crops.
"""
    write_section("occluded", md)
    print(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["make", "detect", "score", "choose", "write"])
    parser.add_argument("checkpoints", nargs="*", help="score, choose: checkpoints; detect: chain labels (a part of one)")
    parser.add_argument("--tag", default="", help="score: the row's name (default: the checkpoint's folder)")
    parser.add_argument("--only", default="", help="choose: only the chains whose label holds this (the others' results kept)")
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.step == "make":
        make()
    elif args.step == "detect":
        detect(args.checkpoints)
    elif args.step == "score":
        score(args.checkpoints, args.tag)
    elif args.step == "choose":
        for checkpoint in args.checkpoints:
            choose(checkpoint, args.only)
    else:
        write()


if __name__ == "__main__":
    main()
