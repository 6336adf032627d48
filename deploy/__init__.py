"""Models out of PyTorch: a checkpoint exported to ONNX and checked against PyTorch (export.py), quantised where accuracy
allows (quantize.py). runtime/ runs what is written here; docs/deploy.md says how to deploy one.

    from deploy import export_checkpoint, exported
"""
from utils import lazy_exports

_HOME = {"deploy.export": ["ExportError", "export_checkpoint", "exported"]}  # looked up when first used (utils.lazy_exports)
__getattr__, __all__ = lazy_exports(__name__, _HOME)
