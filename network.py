"""The embedding network in PyTorch as callers see it: the names they import, each living in torchnet/ by concept
(embedding_net.py: the network, with pooling.py and heads.py; checkpoints.py: checkpoints and their upgrades;
embed_loop.py: crops to embeddings).

    model, cfg = model_from_checkpoint("checkpoints/best/best.pt")   # EmbeddingNet or FusedNet (a runtime.FaceModel)
    emb = model.networks()[0].embed_crops(crops, "auto", "flip")
"""
from torchnet.checkpoints import (CheckpointError, fused_checkpoint, load_model_state, model_from_checkpoint,
                                  read_checkpoint, save_checkpoint)
from torchnet.embed_loop import AUTO_BATCH_MOST, activation_bytes, batch_size_for, embed
from torchnet.embedding_net import EmbeddingNet, FusedNet, InputSettings, ModelSettings, settings_of
from torchnet.heads import HEADS
from torchnet.pooling import POOLINGS, RMAC, GeM, rmac_regions

__all__ = ["AUTO_BATCH_MOST", "CheckpointError", "EmbeddingNet", "FusedNet", "GeM", "HEADS", "InputSettings",
           "ModelSettings", "POOLINGS", "RMAC", "activation_bytes", "batch_size_for", "embed", "fused_checkpoint",
           "load_model_state", "model_from_checkpoint", "read_checkpoint", "rmac_regions", "save_checkpoint",
           "settings_of"]
