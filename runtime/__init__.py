"""The network outside PyTorch: one preprocessing for every evaluation image (preprocess.py) and exported models run by
ONNX Runtime (onnx_model.py). Nothing here imports torch itself, so a deployed model needs neither PyTorch nor
facematch's training code to embed its chips (deploy/ writes the files; docs/deploy.md says how).

    from runtime import load_bundle, embed, model_input
"""
import importlib

# The package's names and the module each lives in, looked up when first used (PEP 562), as detection/ does: importing
# one module of the package never imports the others through this file.
_HOME = {
    "runtime.preprocess": ["batch_input", "model_input"],
    "runtime.embedding_settings": ["TTA", "EmbeddingSettings", "batch_setting", "check_tta"],
    "runtime.face_model": ["FaceModel", "FaceNetwork", "SingleNetwork"],
    "runtime.fused": ["Fusion", "fuse_embeddings"],
    "runtime.onnx_model": ["BUNDLE_FILE", "ONNX_BATCH", "OnnxFusion", "OnnxModelError", "OnnxNet", "embed", "is_bundle", "load_bundle",
                           "session_options"],
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
