"""The network outside PyTorch: one preprocessing for every evaluation image (preprocess.py) and exported models run by
ONNX Runtime (onnx_model.py). Nothing here imports torch itself, so a deployed model needs neither PyTorch nor
facematch's training code to embed its chips (deploy/ writes the files; docs/deploy.md says how).

    from runtime import load_bundle, embed, model_input
"""
from utils import lazy_exports

# The package's names and the module each lives in, looked up when first used (utils.lazy_exports).
_HOME = {
    "runtime.preprocess": ["batch_input", "model_input"],
    "runtime.embedding_settings": ["TTA", "EmbeddingSettings", "batch_setting", "check_tta"],
    "runtime.face_model": ["FaceModel", "FaceNetwork", "SingleNetwork"],
    "runtime.fused": ["Fusion", "fuse_embeddings"],
    "runtime.onnx_model": ["BUNDLE_FILE", "ONNX_BATCH", "OnnxFusion", "OnnxModelError", "OnnxNet", "embed", "is_bundle",
                           "load_bundle", "session_options"],
    "runtime.trained_config": ["upgrade_config"],
}
__getattr__, __all__ = lazy_exports(__name__, _HOME)
