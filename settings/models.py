"""Models from configs and checkpoints: the network a config describes, how a config's model crops photos, and a
checkpoint's model with its config made ready for inference (the network and its preprocessing as trained).

    model, cfg, device = load_for_inference("checkpoints/best/best.pt", [], ["retrieval.k=5"])
"""
from __future__ import annotations

from pathlib import Path

from utils import get_device, get_logger, has_torch
from settings.config import load_config

log = get_logger()


def build_model(cfg: dict):
    """The network `cfg` describes, with its configured weights: (model, where the weights came from)."""
    from network import EmbeddingNet, settings_of

    model_settings, inp, crop = settings_of(cfg)
    model = EmbeddingNet(model_settings, inp, crop, model_settings.weights)
    return model, model.weights_source


def crop_settings_of(cfg: dict) -> list:
    """How a config's model crops photos: its crop section, or each member's (model.members: a config file's crop
    section, a checkpoint's saved crop settings)."""
    from detection import CropSettings

    crops = []
    for member in cfg["model"]["members"] or [None]:
        if member is None:
            crops.append(CropSettings(**cfg["crop"]))
        elif str(member).endswith(".pt"):
            from network import read_checkpoint

            ckpt = read_checkpoint(member)
            metas = ckpt["meta"]["members"] if "members" in ckpt else [ckpt["meta"]]
            crops += [CropSettings.from_saved(meta["crop"]) for meta in metas]
        else:
            crops.append(CropSettings(**load_config([member])["crop"]))
    return crops


RUNTIME_KEYS = ("runtime", "precision", "threads")  # how the network runs, the user's to choose at inference


def same_landmark_net(section: str, key: str, cfg: dict, trained: dict) -> bool:
    """Whether crop.landmark_net names the same file content in both configs (a checkpoint carries its landmark network
    under another path: 'shipped' in the config file, its cache copy in the checkpoint)."""
    if (section, key) != ("crop", "landmark_net") or cfg[section][key] == trained[section][key]:
        return False
    from detection import landmark_net

    return landmark_net.same_network(cfg[section][key], trained[section][key])


def load_for_inference(checkpoint: str | Path, cfg_files: list[str] | None = None,
                       overrides: list[str] | None = None, *, layers: list[tuple[str, dict]] | None = None,
                       user: dict | None = None):
    """The checkpoint's model, its config with the caller's config files and overrides on top, and the
    device: the network and its preprocessing (model, input and crop settings) stay as trained, so
    queries and gallery are seen exactly as validation saw them (a change to them is named and ignored).
    model.runtime, model.precision and model.threads are the caller's: onnx runs the checkpoint's export (made once,
    deploy.exported) in ONNX Runtime; a folder `facematch export` wrote runs there whatever they say.
    `layers` (read_layers of the files and overrides) and `user` (load_config of them) spare reading them again."""
    from detection import CROP_KEYS
    from pipeline.model_file import model_from_file
    from runtime import is_bundle
    from settings.config import read_layers

    layers = read_layers(cfg_files, overrides) if layers is None else layers
    user = load_config(layers=layers) if user is None else user
    # an export runs in ONNX Runtime on the CPU whatever `device` says: no PyTorch device is made for it
    device = "cpu" if is_bundle(checkpoint) or not has_torch() else get_device(user["device"])
    run = {k: user["model"][k] for k in RUNTIME_KEYS}
    path = checkpoint
    if run["runtime"] == "onnx" and not is_bundle(checkpoint) and has_torch():
        from deploy import exported

        path = exported(checkpoint, run["precision"], calibrate=user["data"]["train_dir"])
    model, trained = model_from_file(path, device, threads=int(run["threads"]))
    if is_bundle(path):
        if run["precision"] != model.precision and path == checkpoint:
            log.warning(f"model.precision={run['precision']!r} ignored: {checkpoint} was exported in {model.precision}")
        run.update(runtime="onnx", precision=model.precision)
    cfg = load_config(base=trained, layers=layers)
    cfg["device"] = user["device"]
    cfg["model"].update(run)
    for section in ("model", "input", "crop"):
        for key in list(trained[section]):
            if section == "model" and key in RUNTIME_KEYS or same_landmark_net(section, key, cfg, trained):
                continue
            if cfg[section][key] != trained[section][key]:
                log.warning(f"{section}.{key}={cfg[section][key]!r} ignored: {checkpoint} was trained with "
                            f"{trained[section][key]!r}")
                cfg[section][key] = trained[section][key]
    cfg["crop"].update({k: v for k, v in model.crop_settings().to_dict().items() if k in CROP_KEYS})
    return model, cfg, device
