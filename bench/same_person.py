"""Same-person decisions on the development competition's test people (issue 19): does a threshold the
checkpoint calibrated on its validation people hold its false-accept rate on people it never saw; TAR
against face_recognition at its own operating point (distance 0.6) and at FAR 1e-3; DIR@FPIR 1e-2 with and
without re-ranking; the ROC figure.

    .venv/bin/python bench/same_person.py                       # config/best.yaml's row of bench/table.py
    .venv/bin/python bench/same_person.py --checkpoint PATH

Pairs: every pair of the test people's photos (queries and gallery together; identities from data/dev's
key.json), facematch's cosine distances and face_recognition's Euclidean ones on the same photos (its
descriptors as bench/table.py computed them: HOG, 5-point chip, one jitter). The checkpoint is calibrated
first when it carries no calibration (`train.py --calibrate`, on its own validation people).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchlib import git_rev, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "dev"
BEST = ROOT / "checkpoints" / "table" / "dlib_ft_best" / "best.pt"
FR = ROOT / "outputs" / "table" / "face_recognition_descriptors.npz"
FIGURE = ROOT / "figures" / "roc.png"


def identities(names: list[str]) -> list[str]:
    """The person of each opaque test photo name, from data/dev/key.json."""
    key = json.loads((DEV / "key.json").read_text())
    return [Path(key[n]).parent.name for n in names]


def rates(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FAR, TAR) of a distance threshold."""
    return float(np.mean(impostor <= threshold)), float(np.mean(genuine <= threshold))


def roc(genuine: np.ndarray, impostor: np.ndarray, fars: np.ndarray) -> np.ndarray:
    from evaluation.metrics import tar_at_far

    return np.array([tar_at_far(genuine, impostor, f) for f in fars])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=BEST)
    args = parser.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import train
    from competition import load_ground_truth
    from evaluation.calibration import pair_distances, threshold_for_far
    from evaluation.metrics import tar_at_far
    from pipeline.protocol import decision_report
    from search.retrieval_settings import RetrievalSettings
    from network import read_checkpoint
    from settings import load_for_inference
    from pipeline.embedding import embed_folder
    from settings import embed_settings

    cache = ["data.cache_dir=data/cache/crops"]
    if "calibration" not in read_checkpoint(args.checkpoint).get("meta", {}):
        train.calibrate_checkpoint(args.checkpoint, [], cache)
    model, cfg, device = load_for_inference(args.checkpoint, [], cache)
    calib = model.meta["calibration"]
    query = embed_folder(DEV / "test" / "query", model, device, **embed_settings(cfg))
    gallery = embed_folder(DEV / "test" / "gallery", model, device, **embed_settings(cfg))
    names = list(query.names) + list(gallery.names)
    people = identities(names)
    genuine, impostor = pair_distances(np.concatenate([query.embeddings, gallery.embeddings]), people)

    lines = []
    for far in (1e-2, 1e-3):
        t = threshold_for_far(calib, far)
        measured, tar = rates(genuine, impostor, t["threshold"])
        lines.append(f"| {far:g} | {t['threshold']:.4f} ({t['pairs']} of {calib['impostor_pairs']:,} validation impostor "
                     f"pairs) | {t['tar']:.3f} | **{measured:.2e}** | **{measured / far:.2f}** | "
                     f"{'yes' if 0.5 <= measured / far <= 2 else 'no'} | {tar:.3f} |")

    fr = np.load(FR)
    fr_names = list(fr["q_names"]) + list(fr["g_names"])
    fr_emb = dict(zip(fr_names, np.concatenate([fr["q_emb"], fr["g_emb"]])))
    shared = [i for i, n in enumerate(names) if n in fr_emb]
    x = np.stack([fr_emb[names[i]] for i in shared]).astype(np.float64)
    lab = np.array([people[i] for i in shared])
    rows, cols = np.triu_indices(len(x), k=1)
    sq = (x * x).sum(1)
    fr_dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None))[rows, cols]
    same = lab[rows] == lab[cols]
    fr_genuine, fr_impostor = fr_dist[same], fr_dist[~same]
    fr_far, fr_tar = rates(fr_genuine, fr_impostor, 0.6)
    ours_at_fr = tar_at_far(genuine, impostor, fr_far)
    ours_1e3, fr_1e3 = tar_at_far(genuine, impostor, 1e-3), tar_at_far(fr_genuine, fr_impostor, 1e-3)

    gt = load_ground_truth(DEV)
    g_index = {n: j for j, n in enumerate(gallery.names)}
    keep = [i for i, q in enumerate(query.names) if q in gt["queries"]]
    correct = [{g_index[g] for g in gt["queries"][query.names[i]] if g in g_index} for i in keep]
    dirs = {}
    for label, rerank in (("none", []), ("aqe", ["aqe"])):
        retrieval = RetrievalSettings(**dict(cfg["retrieval"], rerank=rerank))
        dirs[label] = decision_report(query.embeddings[keep], gallery.embeddings, correct, retrieval)

    fars = np.logspace(-5, 0, 60)
    plt.figure(figsize=(6, 4.5))
    plt.semilogx(fars, roc(genuine, impostor, fars), label=f"facematch, config/best.yaml ({Path(args.checkpoint).parent.name})")
    plt.semilogx(fars, roc(fr_genuine, fr_impostor, fars), label="face_recognition")
    plt.scatter([fr_far], [fr_tar], marker="x", color="C1", label="face_recognition at its distance 0.6")
    plt.xlabel("false-accept rate (impostor pairs accepted)")
    plt.ylabel("true-accept rate (genuine pairs accepted)")
    plt.title(f"ROC on the development competition's test people\n({len(genuine):,} genuine, {len(impostor):,} impostor pairs)")
    plt.grid(True, which="both", alpha=0.3)
    plt.legend(loc="lower right", fontsize=8)
    plt.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    plt.savefig(FIGURE, dpi=120)

    md = f"""## Same-person decisions: calibration, verification and open-set identification

Command: `.venv/bin/python bench/same_person.py` (commit {git_rev()}). Machine: {machine()}.
Checkpoint: `{Path(args.checkpoint).relative_to(ROOT)}` (config/best.yaml's row of the fine-tuning table), calibrated
on its {calib['people']} validation people ({calib['photos']} photos; {calib['genuine_pairs']:,} genuine and
{calib['impostor_pairs']:,} impostor pairs; flip TTA as search embeds). Measured on the development competition's
test people, never seen in training nor calibration: every pair of their {len(names):,} photos (queries and gallery),
{len(genuine):,} genuine and {len(impostor):,} impostor pairs.

**Does the calibrated threshold hold its false-accept rate on new people?** (target: within a factor of 2)

| FAR asked | threshold (validation pairs behind it) | TAR on validation | **FAR measured on test** | **measured ÷ asked** | within 2× | TAR on test |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}

**Against face_recognition on the same pairs** ({len(shared):,} photos both described; face_recognition's
Euclidean distance on its descriptors):

| | facematch (config/best.yaml) | face_recognition |
|---|---|---|
| at face_recognition's own threshold 0.6: FAR {fr_far:.2e} | TAR **{ours_at_fr:.3f}** (at the same FAR) | TAR {fr_tar:.3f} |
| TAR@FAR 1e-3 | **{ours_1e3:.3f}** | {fr_1e3:.3f} |

**Open-set identification** (DIR@FPIR 1e-2: each of the {len(keep)} test queries is a mated probe against the
gallery, and a non-mated one with its own person's photos taken out; ranked by the retrieval pipeline):
without re-ranking {dirs['none']['dir@fpir=1e-2']:.3f}, with aqe {dirs['aqe']['dir@fpir=1e-2']:.3f} (TAR@FAR 1e-3 over
query-gallery pairs: {dirs['none']['tar@far=1e-3']:.3f} and {dirs['aqe']['tar@far=1e-3']:.3f}).

![ROC](../figures/roc.png)
"""
    print(md)
    write_section("calibration", md)


if __name__ == "__main__":
    main()
