"""Checkpoints: reading and writing them (atomically; the landmark network a model crops with carried inside), the
config they were trained with on today's keys (upgrade_config), and the network rebuilt from one
(model_from_checkpoint; an exported folder is read by runtime.load_bundle)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from backbones import WeightsError, legacy_frozen_state
from detection import CROP_KEYS, CropSettings, landmark_net
from runtime import is_bundle, load_bundle
from runtime.trained_config import upgrade_config
from torchnet.embedding_net import EmbeddingNet, FusedNet, settings_of
from utils import FacematchError, atomic_write


class CheckpointError(FacematchError, RuntimeError):
    """A checkpoint that cannot be read or belongs to another model."""


def landmark_net_sections(state: dict) -> list[dict]:
    """Every crop section of a checkpoint whose points come from a landmark network file (crop.landmarks: net):
    its meta's, its members' metas and configs, and its own config's."""
    meta, config = state.get("meta") or {}, state.get("config") or {}
    sections = [meta.get("crop"), config.get("crop"), *(m.get("crop") for m in meta.get("members", [])),
                *((m.get("config") or {}).get("crop") for m in state.get("members", []))]
    return [s for s in sections if isinstance(s, dict) and s.get("landmarks") == "net" and s.get("landmark_net")]


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact. A model whose crops are
    aligned by a landmark network carries that network's file, so the checkpoint alone crops as it was trained to."""
    carried = dict(state.get("landmark_nets") or {})
    for section in landmark_net_sections(state):
        name = section["landmark_net"]
        if name not in carried:
            try:
                carried[name] = landmark_net.resolve(name).read_bytes()
            except OSError as exc:
                raise CheckpointError(f"{path}: cannot carry crop.landmark_net {name} ({exc.strerror})") from None
    if carried:
        state = {**state, "landmark_nets": carried}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def unpack_landmark_nets(ckpt: dict) -> dict:
    """A checkpoint whose crop sections name the landmark networks it carries by content (detection.landmark_net.keep:
    sha256:<hex>), so its crops need no file from the machine it was trained on."""
    carried = ckpt.get("landmark_nets") or {}
    for section in landmark_net_sections(ckpt):
        data = carried.get(section["landmark_net"])
        if data is not None:  # else written before checkpoints carried it: the file is looked for where it was
            section["landmark_net"] = landmark_net.keep(data)
    return ckpt


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a facematch checkpoint onto `map_location` (CPU by default, whatever it was saved from)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a facematch checkpoint (no 'model' and 'config' entries)")
    return unpack_landmark_nets(ckpt)


def load_model_state(model: EmbeddingNet, ckpt: dict, path: str | Path = "checkpoint") -> None:
    """Load a checkpoint's weights, refusing one made for another network (backbone, head,
    embedding size, pooling, or the frozen weights outside the state dict)."""
    saved = ckpt.get("model_info") or {**upgrade_config(ckpt["config"])["model"], "fingerprint": ""}
    mine = model.describe()
    if "members" in ckpt:
        raise CheckpointError(f"{path} holds a fusion of several networks ({saved.get('arch')}), but this model is one "
                              f"{mine['arch']}: use the checkpoint as it is, or one of its members' checkpoints")
    keys = ("arch", "embedding_size", "pooling", "head")
    if tuple(str(saved.get(k)) for k in keys) != tuple(str(mine[k]) for k in keys):
        raise CheckpointError(
            f"{path} holds a {saved.get('arch')} ({saved.get('head', 'linear')} head, {saved.get('embedding_size')}-d "
            f"embeddings, {saved.get('pooling')} pooling), but this model is a {mine['arch']} ({mine['head']} head, "
            f"{mine['embedding_size']}-d, {mine['pooling']} pooling): set model.* to match or use another checkpoint")
    state = ckpt["model"]
    if saved.get("fingerprint", "") != mine["fingerprint"]:
        if mine["fingerprint"]:
            raise CheckpointError(f"{path} was trained on other frozen {mine['arch']} weights "
                                  f"(sha256 {str(saved.get('fingerprint'))[:12]}…, here {mine['fingerprint'][:12]}…)")
        try:  # written when the backbone's weights lived outside the state dict (dlib's .dat, read again)
            state = {**{f"backbone.{k}": v for k, v in legacy_frozen_state(mine["arch"], saved["fingerprint"]).items()},
                     **state}
        except WeightsError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit this model: {str(exc).splitlines()[0]}") from None


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                          ckpt: dict | None = None, threads: int | None = None) -> tuple[EmbeddingNet, dict]:
    """Rebuild the network a checkpoint was trained with, in eval mode, with the preprocessing it
    was trained with; returns (model, its config on today's keys). `ckpt`: the file, already read. An exported model
    (a folder `facematch export` wrote) is loaded to run in ONNX Runtime (runtime.load_bundle) with `threads`."""
    if ckpt is None and is_bundle(path):
        model, trained = load_bundle(path, threads or None)
        return model, upgrade_config(trained)
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    cfg = upgrade_config(ckpt["config"])
    if "members" in ckpt:
        return fused_from_checkpoint(ckpt, path).to(device).eval(), cfg
    model = EmbeddingNet(*settings_of(cfg))
    load_model_state(model, ckpt, path)
    if "meta" in ckpt:
        model.meta = saved_meta(ckpt["meta"])
    return model.to(device).eval(), cfg


def saved_meta(meta: dict) -> dict:
    """A checkpoint's meta with its crop settings on today's fields."""
    meta = copy.deepcopy(meta)
    meta["crop"] = {k: v for k, v in CropSettings.from_saved(meta["crop"]).to_dict().items() if k in CROP_KEYS}
    return meta


def fused_checkpoint(model: FusedNet, saved: dict, members_saved: list[dict]) -> dict:
    """A fused model's checkpoint: every member's weights in one state dict, each member's saved config (its model,
    input and crop sections: what rebuilds it) and model_info, the fusion's meta (the members' preprocessing, the
    weights, the calibration) and the config it was made with (`saved`)."""
    return {"config": saved, "model": model.state_dict(), "model_info": model.describe(), "meta": model.meta,
            "members": [{"config": c, "model_info": m.describe()} for c, m in zip(members_saved, model.members)]}


def fused_from_checkpoint(ckpt: dict, path: str | Path) -> FusedNet:
    """The fusion a checkpoint holds (fused_checkpoint), each member rebuilt from its own config, with its meta."""
    members = []
    for saved, meta in zip(ckpt["members"], ckpt["meta"]["members"]):
        member = EmbeddingNet(*settings_of(upgrade_config(saved["config"])))
        member.meta = saved_meta(meta)
        members.append(member)
    model = FusedNet(members, ckpt["meta"]["weights"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit its members: {str(exc).splitlines()[0]}") from None
    if "calibration" in ckpt["meta"]:
        model.meta["calibration"] = copy.deepcopy(ckpt["meta"]["calibration"])
    return model
