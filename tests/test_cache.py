"""Nothing done twice: embeddings are cached by photo content and model fingerprint."""
from __future__ import annotations

import shutil

import numpy as np
import torch

from torchnet import embed_loop
from settings import embed_settings
from conftest import PEOPLE
from settings import build_model
from pipeline.embedding import embed_folder
from settings import embed_settings
from pipeline.embedding_cache import EmbeddingCache
from settings import load_config


def folder_of_photos(tmp_path, n=6):
    folder = tmp_path / "gallery"
    folder.mkdir()
    for i, photo in enumerate(sorted(PEOPLE.rglob("*.jpg"))[:n]):
        shutil.copy(photo, folder / f"{i:02d}.jpg")
    return folder


def test_a_second_run_embeds_nothing_and_a_changed_photo_is_embedded_again(tiny_cfg, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, _ = build_model(tiny_cfg)
    model.eval()
    folder = folder_of_photos(tmp_path)
    calls = []
    real = embed_loop.embed
    monkeypatch.setattr(embed_loop, "embed", lambda m, crops, *a, **k: calls.append(len(crops)) or real(m, crops, *a, **k))

    first = embed_folder(folder, model, "cpu", **embed_settings(tiny_cfg))
    assert (first.embedded, first.from_cache) == (6, 0) and calls == [6]
    second = embed_folder(folder, model, "cpu", **embed_settings(tiny_cfg))
    assert (second.embedded, second.from_cache) == (0, 6) and calls == [6]  # the network never ran
    assert np.array_equal(first.embeddings, second.embeddings) and first.names == second.names

    # A changed photo (other content, same name) is embedded again; the others come from the cache.
    shutil.copy(sorted(PEOPLE.rglob("*.jpg"))[-1], folder / "03.jpg")
    third = embed_folder(folder, model, "cpu", **embed_settings(tiny_cfg))
    assert (third.embedded, third.from_cache) == (1, 5) and calls == [6, 1]
    assert not np.allclose(third.embeddings[3], first.embeddings[3])
    assert np.allclose(np.delete(third.embeddings, 3, 0), np.delete(first.embeddings, 3, 0))


def test_another_model_or_tta_never_reuses_an_embedding(tiny_cfg, tmp_path):
    folder = folder_of_photos(tmp_path, 3)
    torch.manual_seed(0)
    a, _ = build_model(tiny_cfg)
    torch.manual_seed(1)
    b, _ = build_model(tiny_cfg)
    ea = embed_folder(folder, a.eval(), "cpu", **embed_settings(tiny_cfg))
    eb = embed_folder(folder, b.eval(), "cpu", **embed_settings(tiny_cfg))
    assert eb.embedded == 3 and not np.allclose(ea.embeddings, eb.embeddings)
    flip = load_config(overrides=["retrieval.tta=flip"], base=tiny_cfg)
    ef = embed_folder(folder, a, "cpu", **embed_settings(flip))
    assert ef.embedded == 3
    # Degraded queries are never cached: each variant must see the same degradation, embedded anew.
    ed = embed_folder(folder, a, "cpu", degradation="both", **embed_settings(tiny_cfg))
    assert ed.embedded == 3 and ed.from_cache == 0
    assert len(EmbeddingCache(tiny_cfg["data"]["embedding_cache"])) == 9
    assert a.content_fingerprint() != b.content_fingerprint()


def test_the_cache_can_be_turned_off(tiny_cfg, tmp_path):
    folder = folder_of_photos(tmp_path, 2)
    cfg = load_config(overrides=["data.embedding_cache="], base=tiny_cfg)
    model, _ = build_model(cfg)
    model.eval()
    assert embed_folder(folder, model, "cpu", **embed_settings(cfg)).embedded == 2
    assert embed_folder(folder, model, "cpu", **embed_settings(cfg)).embedded == 2


def test_crops_flow_as_arrays_and_the_cache_behind_them_holds_the_same_pixels(tmp_path):
    from PIL import Image

    from detection import CropSettings, crop_paths, list_images

    photos = list_images(PEOPLE, recursive=True)[:3]
    made, first = crop_paths(photos, CropSettings(size=40), tmp_path / "crops")
    files = sorted((tmp_path / "crops").glob("*.png"))
    assert all(isinstance(c, np.ndarray) for c in made) and len(files) == len(made) and first.counts["cached"] == 0
    read, again = crop_paths(photos, CropSettings(size=40), tmp_path / "crops")
    assert again.counts["cached"] == len(made) and all(np.array_equal(a, b) for a, b in zip(made, read))
    on_disk = {np.asarray(Image.open(f).convert("RGB")).tobytes() for f in files}
    assert on_disk == {c.tobytes() for c in made}  # PNG is lossless: the file is the array
